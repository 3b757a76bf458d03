//! Deploying the three data-lake stacks to three accounts against the emulator: `runner`'s wall time for the first
//! deploy of each pipeline (dev, test, prod) and for the no-change re-run. Run: `cargo bench --bench deploy`
//! (needs `scripts/moto install`). Figures go to README, not to asserts.

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

fn run(port: u16, env: &str, copy: &Path, state: &Path) -> Duration {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("pipelines/{env}.ron"));
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["run", pipeline.to_str().unwrap(), "--source-dir", copy.to_str().unwrap(), "--output", "json"])
        .current_dir(state)
        .env("AWS_ENDPOINT_URL", format!("http://localhost:{port}"))
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run runner");
    let took = started.elapsed();
    assert!(status.success(), "runner run {env} failed");
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("deploy: bench");
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let port = moto.port;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"), &copy.path().join("pipelines"));
    let state = tempfile::tempdir().unwrap();

    println!("{:<8} {:>14} {:>22}", "pipeline", "first deploy", "no-change re-run (median of 5)");
    let mut first_total = Duration::ZERO;
    let mut rerun_total = Duration::ZERO;
    for env in ["dev", "test", "prod"] {
        let first = run(port, env, copy.path(), state.path());
        let mut reruns: Vec<Duration> = (0..5).map(|_| run(port, env, copy.path(), state.path())).collect();
        reruns.sort();
        let median = reruns[2];
        first_total += first;
        rerun_total += median;
        println!("{env:<8} {:>12.0}ms {:>20.0}ms", first.as_secs_f64() * 1e3, median.as_secs_f64() * 1e3);
    }
    println!(
        "{:<8} {:>12.0}ms {:>20.0}ms   (3 accounts, 9 stacks; target: re-run under 1 s per account)",
        "total",
        first_total.as_secs_f64() * 1e3,
        rerun_total.as_secs_f64() * 1e3
    );
    drop(moto);
}
