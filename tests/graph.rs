//! `runner graph` and `runner plan`: Graphviz accepts the DOT output; text, DOT, Mermaid and plan outputs are
//! compared to snapshots in `tests/snapshots/` (record or accept them with `UPDATE_SNAPSHOTS=1 cargo test`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// A diamond behind a Source: source -> (build -> test, lint) -> deploy.
const DIAMOND: &str = r#"Pipeline(
    name: "diamond",
    steps: [
        Step(id: "source", kind: Source(repository: "https://example.com/acme/app.git", reference: Branch("main"))),
        Step(id: "build", needs: ["source"], kind: Shell(commands: ["make build"])),
        Step(id: "lint", needs: ["source"], kind: Shell(program: "cargo", args: ["clippy"])),
        Step(id: "test", needs: ["build"], kind: Shell(commands: ["make test"])),
        Step(id: "deploy", needs: ["test", "lint"], kind: Shell(commands: ["make deploy"])),
    ],
)
"#;

const IDS: [&str; 5] = ["source", "build", "lint", "test", "deploy"];

fn runner(text: &str, args: &[&str]) -> Output {
    let out = Test::new().pipeline(text).args(args).run();
    out.assert_code(0);
    out
}

fn example() -> String {
    let path = repo_root().join("pipelines").join("example.ron");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("the shipped {} is missing: {e}", path.display()))
}

/// `a` is printed before `b` (first occurrences).
fn assert_before(text: &str, a: &str, b: &str) {
    let (i, j) = (text.find(a), text.find(b));
    assert!(i.is_some() && j.is_some() && i < j, "{a:?} should come before {b:?} in:\n{text}");
}

#[test]
fn dot_output_is_accepted_by_graphviz() {
    let have_dot = Command::new("dot").arg("-V").stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !have_dot {
        if std::env::var_os("CI").is_some() {
            panic!("`dot` (graphviz) is missing; run scripts/install-test-deps");
        }
        eprintln!("note: `dot` (graphviz) is missing, skipping; run scripts/install-test-deps");
        return;
    }
    for text in [DIAMOND.to_owned(), example()] {
        let out = runner(&text, &["graph", "pipeline.ron", "--format", "dot"]);
        let mut dot = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dot");
        dot.stdin.take().unwrap().write_all(out.stdout.as_bytes()).expect("write to dot");
        let svg = dot.wait_with_output().expect("wait for dot");
        assert!(
            svg.status.success() && svg.stderr.is_empty(),
            "dot rejected the output ({}):\n{}\n--- dot stderr\n{}",
            svg.status,
            out.stdout,
            String::from_utf8_lossy(&svg.stderr)
        );
        assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"));
    }
}

#[test]
fn dot_output_has_every_step_and_edge() {
    let out = runner(DIAMOND, &["graph", "pipeline.ron", "--format", "dot"]);
    assert!(out.stdout.contains("digraph"), "{}", out.dump());
    for id in IDS {
        out.assert_stdout_contains(id);
    }
    assert_eq!(out.stdout.matches("->").count(), 5, "5 edges expected\n{}", out.dump());
    assert_snapshot("graph_dot", &out.stdout);
}

#[test]
fn text_graph_matches_its_snapshot() {
    let out = runner(DIAMOND, &["graph", "pipeline.ron", "--format", "text"]);
    for id in IDS {
        out.assert_stdout_contains(id);
    }
    assert_snapshot("graph_text", &out.stdout);
}

#[test]
fn mermaid_graph_matches_its_snapshot() {
    let out = runner(DIAMOND, &["graph", "pipeline.ron", "--format", "mermaid"]);
    let first = out.stdout.trim_start();
    assert!(first.starts_with("graph") || first.starts_with("flowchart"), "not Mermaid:\n{}", out.dump());
    for id in IDS {
        out.assert_stdout_contains(id);
    }
    assert_eq!(out.stdout.matches("-->").count(), 5, "5 edges expected\n{}", out.dump());
    assert_snapshot("graph_mermaid", &out.stdout);
}

#[test]
fn plan_lists_the_waves_in_order() {
    let out = runner(DIAMOND, &["plan", "pipeline.ron"]);
    // Waves: source | build, lint | test | deploy.
    assert_before(&out.stdout, "source", "build");
    assert_before(&out.stdout, "build", "test");
    assert_before(&out.stdout, "lint", "test");
    assert_before(&out.stdout, "test", "deploy");
    assert_snapshot("plan", &out.stdout);
}

#[test]
fn dry_run_prints_the_plan() {
    let plan = runner(DIAMOND, &["plan", "pipeline.ron"]);
    let dry_run = runner(DIAMOND, &["run", "pipeline.ron", "--dry-run"]);
    assert_eq!(plan.stdout, dry_run.stdout);
}

#[test]
fn example_plan_matches_its_snapshot() {
    let out = runner(&example(), &["plan", "pipeline.ron"]);
    assert_snapshot("example_plan", &out.stdout);
}

#[test]
fn example_graph_matches_its_snapshot() {
    let out = runner(&example(), &["graph", "pipeline.ron", "--format", "text"]);
    assert_snapshot("example_graph_text", &out.stdout);
}

#[test]
fn the_shipped_example_validates() {
    runner(&example(), &["validate", "pipeline.ron"]);
}
