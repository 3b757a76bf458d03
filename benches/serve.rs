//! `runner serve`: how fast a push starts a run, and what an idle server costs. Run: `cargo bench --bench serve`.
//! Figures go to README, not to asserts.
//!
//! - webhook: a commit, then a signed push delivery; the time from sending it to the run being recorded (the
//!   server's API names the run in progress), median of 20;
//! - polling: a commit at a random moment of a 2 s poll interval; the time until the run is recorded (target: at
//!   most the interval plus 1 s);
//! - idle: 3 pipelines and 1,000 past runs under the state dir: the server's resident memory, and the time of the
//!   run-list page (`/pipelines/{name}`, 50 runs) and of `/api/pipelines/{name}/runs`, median of 20.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::{json, Value};

const TOKEN: &str = "bench-token";
const SECRET: &str = "bench-secret";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(repo: &Path, n: usize) -> String {
    std::fs::write(repo.join("app.txt"), format!("{n}\n")).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", &format!("commit {n}")]);
    git(repo, &["rev-parse", "HEAD"])
}

fn pipeline(name: &str, repo: &Path) -> String {
    format!(
        r#"Pipeline(name: "{name}", steps: [
            Step(id: "source", kind: Source(repository: "{}", reference: Branch("main"))),
            Step(id: "build", needs: ["source"], kind: Shell(commands: ["cat app.txt"])),
        ])"#,
        repo.display()
    )
}

struct Served {
    child: Child,
    base: String,
    stderr: PathBuf,
    client: reqwest::blocking::Client,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, files: &[&str], poll: &str) -> Served {
    let stderr = dir.join("serve.stderr");
    let mut args = vec!["serve"];
    args.extend(files);
    args.extend([
        "--listen",
        "127.0.0.1:0",
        "--poll",
        poll,
        "--token",
        "env:BENCH_TOKEN",
        "--webhook-secret",
        "env:BENCH_SECRET",
    ]);
    let child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(&args)
        .current_dir(dir)
        .env("BENCH_TOKEN", TOKEN)
        .env("BENCH_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        if let Some(at) = text.find("listening on http://") {
            let rest = &text[at + "listening on ".len()..];
            break rest.chars().take_while(|c| !c.is_whitespace()).collect::<String>();
        }
        assert!(Instant::now() < deadline, "the server did not start: {text}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let client = reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    Served { child, base, stderr, client }
}

impl Served {
    fn json(&self, path: &str) -> Value {
        self.client.get(format!("{}{path}", self.base)).send().unwrap().json().unwrap()
    }

    fn running(&self, pipeline: &str) -> Option<String> {
        let p = self.json(&format!("/api/pipelines/{pipeline}"));
        p["pipeline"]["running"].as_str().filter(|s| !s.is_empty()).map(str::to_string)
    }

    fn wait_idle(&self, pipeline: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.json(&format!("/api/pipelines/{pipeline}"));
            if p["pipeline"]["running"].is_null()
                && p["pipeline"]["waiting"].is_null()
                && p["pipeline"]["last_run"].is_object()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not idle: {p}\n{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Time from `since` until a run other than `previous` is recorded.
    fn wait_for_new_run(&self, pipeline: &str, previous: &str, since: Instant) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(id) = self.running(pipeline) {
                if id != previous {
                    return since.elapsed();
                }
            }
            let last = self.json(&format!("/api/pipelines/{pipeline}/runs?limit=1"));
            if let Some(id) = last["runs"][0]["run_id"].as_str() {
                if id != previous {
                    return since.elapsed();
                }
            }
            assert!(Instant::now() < deadline, "no new run");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn last_run(&self, pipeline: &str) -> String {
        self.json(&format!("/api/pipelines/{pipeline}/runs?limit=1"))["runs"][0]["run_id"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    }

    fn time_get(&self, path: &str) -> Duration {
        let mut times: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let r = self.client.get(format!("{}{path}", self.base)).send().unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().unwrap();
                t.elapsed()
            })
            .collect();
        times.sort();
        times[10]
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn webhook(repo: &Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.ron"), pipeline("app", repo)).unwrap();
    let server = serve(dir.path(), &["app.ron"], "1h");
    server.wait_idle("app");
    let mut times = Vec::new();
    for n in 0..20 {
        let previous = server.last_run("app");
        let head = commit(repo, 100 + n);
        let body = serde_json::to_vec(&json!({
            "ref": "refs/heads/main", "after": head, "repository": {"clone_url": repo.display().to_string()}
        }))
        .unwrap();
        let started = Instant::now();
        let r = server
            .client
            .post(format!("{}/hooks/github", server.base))
            .header("x-github-event", "push")
            .header("x-hub-signature-256", sign(&body))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        times.push(server.wait_for_new_run("app", &previous, started));
        server.wait_idle("app");
    }
    times.sort();
    println!(
        "webhook push to run start: median {} (min {}, max {}) over 20; target under 200 ms",
        ms(times[10]),
        ms(times[0]),
        ms(times[19])
    );
}

fn polling(repo: &Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.ron"), pipeline("app", repo)).unwrap();
    let server = serve(dir.path(), &["app.ron"], "2s");
    server.wait_idle("app");
    let mut times = Vec::new();
    for n in 0..6 {
        // A commit at some moment of the interval.
        std::thread::sleep(Duration::from_millis(330 * n as u64 % 2000));
        let previous = server.last_run("app");
        commit(repo, 200 + n);
        let started = Instant::now();
        times.push(server.wait_for_new_run("app", &previous, started));
        server.wait_idle("app");
    }
    times.sort();
    println!(
        "polling (every 2 s) commit to run start: {} (6 commits); target at most the interval + 1 s = 3 s",
        times.iter().map(|t| ms(*t)).collect::<Vec<_>>().join(", ")
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn idle(repo: &Path) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["dev", "test", "prod"] {
        std::fs::write(dir.path().join(format!("{name}.ron")), pipeline(name, repo)).unwrap();
    }
    // One real run of each, by the server; then 1,000 past runs made from them (their records copied under new ids).
    {
        let server = serve(dir.path(), &["dev.ron", "test.ron", "prod.ron"], "1h");
        for name in ["dev", "test", "prod"] {
            server.wait_idle(name);
        }
    }
    let runs = dir.path().join(".runner/runs");
    let serve_runs = dir.path().join(".runner/serve/runs");
    let mut made = 0;
    for name in ["dev", "test", "prod"] {
        let original = std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(&format!("{name}-")))
            .unwrap();
        let count = if name == "prod" { 334 } else { 333 };
        for i in 0..count {
            let id = format!("{name}-20260101T{:02}{:02}{:02}.000Z", i / 3600 % 24, i / 60 % 60, i % 60);
            let target = runs.join(&id);
            copy_dir(&runs.join(&original), &target);
            let state = std::fs::read_to_string(target.join("state.json")).unwrap().replace(&original, &id);
            std::fs::write(target.join("state.json"), state).unwrap();
            let meta =
                std::fs::read_to_string(serve_runs.join(format!("{original}.json"))).unwrap().replace(&original, &id);
            std::fs::write(serve_runs.join(format!("{id}.json")), meta).unwrap();
            made += 1;
        }
    }
    let server = serve(dir.path(), &["dev.ron", "test.ron", "prod.ron"], "1h");
    for name in ["dev", "test", "prod"] {
        server.wait_idle(name);
    }
    let started = server.rss_kib();
    let list = server.time_get("/pipelines/prod");
    let api = server.time_get("/api/pipelines/prod/runs");
    let index = server.time_get("/");
    // Every page of every pipeline's history once (each finished run's summary is then cached).
    for name in ["dev", "test", "prod"] {
        let mut before: Option<String> = None;
        loop {
            let path = match &before {
                Some(b) => format!("/api/pipelines/{name}/runs?limit=50&before={b}"),
                None => format!("/api/pipelines/{name}/runs?limit=50"),
            };
            let page = server.json(&path);
            match page["next_before"].as_str() {
                Some(b) => before = Some(b.to_string()),
                None => break,
            }
        }
    }
    let browsed = server.rss_kib();
    let list_warm = server.time_get("/pipelines/prod");
    println!(
        "idle, 3 pipelines, {} past runs: RSS {:.1} MB after start and the first pages, {:.1} MB after listing every \
         run; target under 30 MB",
        made + 3,
        started as f64 / 1024.0,
        browsed as f64 / 1024.0
    );
    println!(
        "run-list page /pipelines/prod (50 of {} runs): median {}; after every run was listed {}; \
         /api/pipelines/prod/runs {}; / {}; target under 50 ms",
        334 + 1,
        ms(list),
        ms(list_warm),
        ms(api),
        ms(index)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("serve: bench");
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit(repo.path(), 0);
    webhook(repo.path());
    polling(repo.path());
    idle(repo.path());
}
