//! Deploying against the emulator, with the release binary. Run: `cargo bench --bench deploy` (needs
//! `scripts/moto install`); `cargo bench --bench deploy -- accounts` or `-- listed` for one part. Figures go to
//! README, not to asserts.
//!
//! - listed: the listed-stacks fixture (tests/fixtures/listed: three stacks, one importing another's export) to
//!   three accounts, first deploy and the no-change re-run of each pipeline;
//! - accounts: one Deploy over 10 and 100 accounts (one small stack each, max_parallel 16), on a fresh emulator:
//!   first deploy and no-change re-run, wall time and the runner's peak memory (VmHWM, from wait4's rusage).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Moto;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// One `runner` run: its wall time and peak resident memory in MB.
struct Ran {
    wall: Duration,
    peak_mb: f64,
}

// The child is reaped by wait4 below, which the lint does not see.
#[allow(clippy::zombie_processes)]
fn runner(port: u16, args: &[&str], dir: &Path) -> Ran {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL", format!("http://localhost:{port}"))
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run runner");
    // wait4 rather than Child::wait: its rusage is this child's alone (ru_maxrss in KiB).
    let mut status = 0;
    // SAFETY: plain struct of integers, filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are to live locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "runner {args:?} failed");
    Ran { wall, peak_mb: usage.ru_maxrss as f64 / 1024.0 }
}

fn listed(moto: &Moto) {
    let copy = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/listed");
    copy_dir(&fixture.join("pipelines"), &copy.path().join("pipelines"));
    let state = tempfile::tempdir().unwrap();
    println!("listed stacks (tests/fixtures/listed)");
    println!("{:<8} {:>14} {:>22}", "pipeline", "first deploy", "no-change re-run (median of 5)");
    let mut first_total = Duration::ZERO;
    let mut rerun_total = Duration::ZERO;
    for env in ["dev", "test", "prod"] {
        let pipeline = fixture.join(format!("pipelines/{env}.ron"));
        let args = ["run", pipeline.to_str().unwrap(), "--source-dir", copy.path().to_str().unwrap()];
        let first = runner(moto.port, &args, state.path()).wall;
        let mut reruns: Vec<Duration> = (0..5).map(|_| runner(moto.port, &args, state.path()).wall).collect();
        reruns.sort();
        let median = reruns[2];
        first_total += first;
        rerun_total += median;
        println!("{env:<8} {:>12.0}ms {:>20.0}ms", first.as_secs_f64() * 1e3, median.as_secs_f64() * 1e3);
    }
    println!(
        "{:<8} {:>12.0}ms {:>20.0}ms   (3 accounts, 9 stacks)",
        "total",
        first_total.as_secs_f64() * 1e3,
        rerun_total.as_secs_f64() * 1e3
    );
}

const QUEUE: &str =
    r#"{"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"QueueUrl": {"Value": {"Ref": "Queue"}}}}"#;

fn accounts(n: usize) {
    // A fresh emulator per size: the second size does not find the first's stacks.
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let list: Vec<String> = (1..=n).map(|i| format!("{:012}", 100_000_000_000u64 + i as u64)).collect();
    std::fs::write(dir.path().join("queue.json"), QUEUE).unwrap();
    std::fs::write(
        dir.path().join("fleet.ron"),
        format!(
            r#"Pipeline(name: "fleet", defaults: (max_parallel: 16), steps: [
    Step(id: "deploy", kind: Deploy(accounts: ["{}"], region: "us-east-1",
        stacks: Listed([(name: "Queue", template: "queue.json")]))),
])"#,
            list.join(",")
        ),
    )
    .unwrap();
    let args = ["run", "fleet.ron", "--output", "json"];
    let first = runner(moto.port, &args, dir.path());
    let mut again: Vec<Ran> = (0..3).map(|_| runner(moto.port, &args, dir.path())).collect();
    again.sort_by_key(|r| r.wall);
    let median = &again[1];
    let peak = again.iter().map(|r| r.peak_mb).fold(first.peak_mb, f64::max);
    println!(
        "{n:>4} accounts  first deploy {:>8.0} ms ({:>5.1} ms/account)  no-change re-run {:>7.0} ms ({:>5.1} ms/account)  \
         peak RSS {:>5.1} MB (first {:.1}, re-runs {:.1}-{:.1})",
        first.wall.as_secs_f64() * 1e3,
        first.wall.as_secs_f64() * 1e3 / n as f64,
        median.wall.as_secs_f64() * 1e3,
        median.wall.as_secs_f64() * 1e3 / n as f64,
        peak,
        first.peak_mb,
        again.iter().map(|r| r.peak_mb).fold(f64::MAX, f64::min),
        again.iter().map(|r| r.peak_mb).fold(0.0, f64::max),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if std::env::args().any(|a| a == "--list") {
        println!("deploy: bench");
        return;
    }
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| part.contains(a.as_str()));
    if wants("listed") {
        let Some(moto) = Moto::start() else { return };
        listed(&moto);
    }
    if wants("accounts") {
        println!("one Deploy over many accounts (one stack each, max_parallel 16)");
        accounts(10);
        accounts(100);
    }
}
