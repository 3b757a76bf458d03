//! A real `runner serve` for the server's tests: the binary started on a free loopback port with a known token
//! (and webhook secret), reached over real HTTP; GitHub push deliveries signed as GitHub signs them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{json, Value};

use crate::common::{wait_until, Running, Test};

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const HOOK_SECRET: &str = "It's a Secret to Everybody";
/// How long a test waits for something the server does.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running server.
pub struct Served {
    pub running: Running,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub client: reqwest::blocking::Client,
}

/// Start `runner serve FILES... --listen 127.0.0.1:0` in the test's directory, with the token and webhook secret
/// from environment variables; wait until it listens.
pub fn serve(test: &Test, files: &[&str], extra: &[&str]) -> Served {
    let mut args = vec!["serve"];
    args.extend(files);
    args.extend([
        "--listen",
        "127.0.0.1:0",
        "--token",
        "env:RUNNER_TEST_TOKEN",
        "--webhook-secret",
        "env:RUNNER_TEST_HOOK_SECRET",
    ]);
    args.extend(extra);
    let running = test.spawn_with(&args);
    attach(running)
}

/// Wait for a started server to say where it listens.
pub fn attach(running: Running) -> Served {
    let listening =
        wait_until(PATIENCE, || running.stderr().contains("listening on http://") || running_ended(&running));
    let stderr = running.stderr();
    assert!(listening && stderr.contains("listening on http://"), "the server did not start:\n{stderr}");
    let at = stderr.find("listening on http://").unwrap() + "listening on ".len();
    let base: String = stderr[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    let client = reqwest::blocking::Client::builder()
        // The server is on the loopback: never through a proxy of the environment (HTTP_PROXY, ALL_PROXY).
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Served { running, base, client }
}

fn running_ended(running: &Running) -> bool {
    crate::common::process_is_gone(running.pid())
}

/// The test's environment for a server: the token and the webhook secret.
pub fn with_secrets(test: Test) -> Test {
    test.env("RUNNER_TEST_TOKEN", TOKEN).env("RUNNER_TEST_HOOK_SECRET", HOOK_SECRET)
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A GitHub `push` payload (the fields GitHub sends that matching reads, and a few more).
pub fn push_payload(repository: &str, reference: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": reference,
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "repository": {
            "full_name": "acme/infra",
            "clone_url": repository,
            "default_branch": "main",
        },
        "pusher": {"name": "octocat"},
        "head_commit": {"id": after, "message": "a commit"},
    }))
    .unwrap()
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// POST with the bearer token (or without when `bearer` is false): status and JSON body.
    pub fn post(&self, path: &str, body: Value, bearer: bool) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).json(&body);
        if bearer {
            request = request.bearer_auth(TOKEN);
        }
        let r = request.send().unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// A webhook delivery: the body signed with `secret` (None: no signature header).
    pub fn deliver(&self, event: &str, body: &[u8], secret: Option<&str>) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url("/hooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .body(body.to_vec());
        if let Some(secret) = secret {
            request = request.header("x-hub-signature-256", sign(secret, body));
        }
        let r = request.send().unwrap_or_else(|e| panic!("POST /hooks/github: {e}"));
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// A correctly signed push of `after` to `reference` of `repository`.
    pub fn push(&self, repository: &str, reference: &str, after: &str) -> (u16, Value) {
        self.deliver("push", &push_payload(repository, reference, after), Some(HOOK_SECRET))
    }

    /// The pipeline's runs, newest first.
    pub fn runs(&self, pipeline: &str) -> Vec<Value> {
        self.json(&format!("/api/pipelines/{pipeline}/runs"))["runs"].as_array().cloned().unwrap_or_default()
    }

    pub fn pipeline(&self, pipeline: &str) -> Value {
        self.json(&format!("/api/pipelines/{pipeline}"))
    }

    pub fn run(&self, pipeline: &str, run_id: &str) -> Value {
        self.json(&format!("/api/pipelines/{pipeline}/runs/{run_id}"))
    }

    /// Wait until the pipeline has a run of `commit` whose status is `status`; returns it.
    pub fn wait_for_run(&self, pipeline: &str, commit: &str, status: &str) -> Value {
        let mut found = Value::Null;
        let ok = wait_until(PATIENCE, || {
            found = self
                .runs(pipeline)
                .into_iter()
                .find(|r| r["commit"] == commit && r["status"] == status)
                .unwrap_or(Value::Null);
            !found.is_null()
        });
        assert!(ok, "no {status} run of {commit} in {pipeline}: {:#?}\n{}", self.runs(pipeline), self.running.stderr());
        found
    }

    /// Wait until the pipeline's branches have been asked `n` more times than now (the poll went round).
    pub fn wait_for_checks(&self, pipeline: &str, more: u64) {
        let checks = |s: &Served| s.pipeline(pipeline)["pipeline"]["last_check"]["checks"].as_u64().unwrap_or(0);
        let target = checks(self) + more;
        assert!(
            wait_until(PATIENCE, || checks(self) >= target),
            "the server stopped polling:\n{}",
            self.running.stderr()
        );
    }

    /// Nothing runs or waits.
    pub fn wait_idle(&self, pipeline: &str) {
        let ok = wait_until(PATIENCE, || {
            let p = self.pipeline(pipeline);
            p["pipeline"]["running"].is_null() && p["pipeline"]["waiting"].is_null()
        });
        assert!(ok, "`{pipeline}` did not become idle: {:#}", self.pipeline(pipeline));
    }

    /// The server's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.running.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

/// A pipeline that clones `repo` at `branch`, then runs `commands` in the checkout.
pub fn pipeline(name: &str, repo: &str, branch: &str, commands: &[&str]) -> String {
    let commands: Vec<String> = commands.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"Pipeline(
    name: "{name}",
    steps: [
        Step(id: "source", kind: Source(repository: "{repo}", reference: Branch("{branch}"))),
        Step(id: "build", needs: ["source"], kind: Shell(commands: [{}])),
    ],
)
"#,
        commands.join(", ")
    )
}

/// A local HTTP listener that answers 200 to every request and keeps each body: where notification webhooks post.
pub struct WebhookListener {
    pub port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl WebhookListener {
    pub fn start() -> WebhookListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                kept.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                let mut stream = stream;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            }
        });
        WebhookListener { port, bodies }
    }

    /// The bodies received so far, as text.
    pub fn texts(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// The bodies received so far, as JSON (a body that is not JSON as a string).
    pub fn bodies(&self) -> Vec<Value> {
        self.texts().iter().map(|b| serde_json::from_str(b).unwrap_or(json!(b))).collect()
    }
}
