//! The main job's timing: `scripts/demo` with the release binary, its first run of pipelines/prod.ron split by phase
//! (clone, synth, publish, deploy, outputs) and the no-change re-run. Run: `cargo bench --bench demo` (needs
//! `scripts/moto install`, node and npm). node_modules come from `$HOME/.cache/runner-datalake` when an earlier run
//! installed them (the install is timed by its own line when it happens). Figures go to README.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// When a node started and finished, from the JSON events.
#[derive(Default, Clone, Copy)]
struct Span {
    start: Option<SystemTime>,
    end: Option<SystemTime>,
}

fn time_of(event: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(event["time"].as_str().unwrap()).unwrap()
}

/// From the first start to the last end of the nodes `select` picks.
fn phase(spans: &BTreeMap<String, Span>, select: impl Fn(&str) -> bool) -> Duration {
    let picked: Vec<&Span> = spans.iter().filter(|(id, _)| select(id)).map(|(_, s)| s).collect();
    let start = picked.iter().filter_map(|s| s.start).min();
    let end = picked.iter().filter_map(|s| s.end).max();
    match (start, end) {
        (Some(s), Some(e)) => e.duration_since(s).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("demo: bench");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(root.join("scripts/demo"))
        .args(["--output", "json"])
        .current_dir(root)
        .env("RUNNER_BIN", env!("CARGO_BIN_EXE_runner"))
        .env("DEMO_DIR", dir.path())
        .env("CI", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/demo");
    assert!(out.status.success(), "scripts/demo failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> =
        stdout.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let starts: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| e["event"] == "run_started").map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 2, "two runs");
    for (k, run) in [&events[starts[0]..starts[1]], &events[starts[1]..]].into_iter().enumerate() {
        let mut spans: BTreeMap<String, Span> = BTreeMap::new();
        let mut wall = Duration::ZERO;
        for e in run {
            let node = e["node"].as_str().unwrap_or_default().to_string();
            match e["event"].as_str() {
                Some("node_started") => {
                    spans.entry(node).or_default().start.get_or_insert(time_of(e));
                }
                Some("node_finished") => spans.entry(node).or_default().end = Some(time_of(e)),
                Some("run_finished") => wall = Duration::from_millis(e["duration_ms"].as_u64().unwrap()),
                _ => {}
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let statuses: BTreeMap<String, usize> =
            run.iter().filter(|e| e["event"] == "node_finished").fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e["status"].as_str().unwrap().to_string()).or_default() += 1;
                m
            });
        println!(
            "{} run: {:.0} ms wall; clone {:.0} ms, synth {:.0} ms, publish {:.0} ms, deploy {:.0} ms, outputs {:.0} ms \
             (written, read back, smoke test); nodes {statuses:?}",
            if k == 0 { "first" } else { "no-change" },
            ms(wall),
            ms(phase(&spans, |id| id == "source")),
            ms(phase(&spans, |id| id == "synth")),
            ms(phase(&spans, |id| id.starts_with("publish"))),
            ms(phase(&spans, |id| id.starts_with("deploy"))),
            ms(phase(&spans, |id| ["outputs", "read-back", "smoke-test"].contains(&id))),
        );
    }
}
