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

/// The listed-stacks fixture's prod pipeline: a Deploy of three stacks (S3 after the VPC) into account 333333333333.
fn prod() -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures/listed/pipelines/prod.ron"))
        .expect("the fixture's prod pipeline")
}

fn graph_of(text: &str, format: &str) -> Output {
    let out =
        Test::new().pipeline(text).env("DATALAKE_REPO", ".").args(&["graph", "pipeline.ron", "--format", format]).run();
    out.assert_code(0);
    out
}

/// A diamond with edges the others imply: `deploy` also names `build` and `source`, `test` also names `source`.
const REDUNDANT: &str = r#"Pipeline(
    name: "redundant",
    steps: [
        Step(id: "source", kind: Shell(commands: ["true"])),
        Step(id: "build", needs: ["source"], kind: Shell(commands: ["true"])),
        Step(id: "lint", needs: ["source"], kind: Shell(commands: ["true"])),
        Step(id: "test", needs: ["build", "source"], kind: Shell(commands: ["true"])),
        Step(id: "deploy", needs: ["test", "lint", "build", "source"], kind: Shell(commands: ["true"])),
    ],
)
"#;

#[test]
fn dot_clusters_name_their_account_and_region_in_one_font() {
    let out = graph_of(&prod(), "dot");
    out.assert_stdout_contains(
        "subgraph \"cluster_deploy-prod\" {\n    label=\"deploy-prod\\naws://333333333333/us-east-1\";",
    );
    // One font: the graph's (cluster labels), the nodes' and the edges'; no other named anywhere.
    for element in ["graph", "node", "edge"] {
        out.assert_stdout_contains(&format!("{element} [fontname=\"Helvetica\""));
    }
    assert_eq!(out.stdout.matches("fontname=").count(), 3, "{}", out.dump());
    assert_snapshot("prod_graph_dot", &out.stdout);
}

#[test]
fn edges_implied_by_others_are_left_out_as_tred_would() {
    let dot = graph_of(REDUNDANT, "dot");
    let edges: Vec<&str> = dot.stdout.lines().filter(|l| l.contains(" -> ")).map(str::trim).collect();
    assert_eq!(
        edges,
        [
            "\"source\" -> \"build\";",
            "\"source\" -> \"lint\";",
            "\"build\" -> \"test\";",
            "\"lint\" -> \"deploy\";",
            "\"test\" -> \"deploy\";"
        ],
        "{}",
        dot.dump()
    );
    let mermaid = graph_of(REDUNDANT, "mermaid");
    assert_eq!(mermaid.stdout.matches("-->").count(), 5, "{}", mermaid.dump());
    // The prod pipeline: `synth` runs before DataLakeS3 through DataLakeVpc, which it needs.
    let prod = graph_of(&prod(), "dot");
    assert!(!prod.stdout.contains("\"synth\" -> \"deploy-prod/DataLakeS3\""), "{}", prod.dump());
    assert!(prod.stdout.contains("\"synth\" -> \"deploy-prod/DataLakeVpc\""), "{}", prod.dump());
    // Graphviz's own `tred` finds nothing more to remove.
    let Ok(mut tred) = Command::new("tred").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "`tred` (graphviz) is missing; run scripts/install-test-deps");
        return;
    };
    tred.stdin.take().unwrap().write_all(dot.stdout.as_bytes()).unwrap();
    let reduced = tred.wait_with_output().unwrap();
    let count = String::from_utf8_lossy(&reduced.stdout).matches("->").count();
    assert_eq!(count, 5, "tred:\n{}", String::from_utf8_lossy(&reduced.stdout));
}

#[test]
fn mermaid_groups_a_stages_stacks_in_a_subgraph_like_dot() {
    let out = graph_of(&prod(), "mermaid");
    let subgraph: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("subgraph"))
        .take_while(|l| l.trim() != "end")
        .collect();
    assert!(
        subgraph.first().is_some_and(|l| l.contains("deploy-prod<br/>aws://333333333333/us-east-1")),
        "{}",
        out.dump()
    );
    for stack in ["DataLakeVpc", "DataLakeS3", "DataLakeDynamoDb"] {
        assert!(subgraph.iter().any(|l| l.contains(stack)), "{stack} in the subgraph\n{}", out.dump());
    }
    assert!(!subgraph.iter().any(|l| l.contains("synth") || l.contains("smoke-test")), "{}", out.dump());
    assert_snapshot("prod_graph_mermaid", &out.stdout);
}

#[test]
fn the_text_graph_is_a_tree_of_what_runs_after_what() {
    let out = graph_of(REDUNDANT, "text");
    // Each node one level under the node it runs after; `deploy`, after both `test` and `lint`, is shown in full
    // under the first of them and again under the second.
    let depth = |line: &str| line.chars().take_while(|c| !c.is_ascii_alphabetic()).count() / 4;
    let lines: Vec<(usize, String)> = out
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.contains('['))
        .map(|l| (depth(l), l.split(['├', '└', '│', '─', ' ']).find(|w| !w.is_empty()).unwrap_or("").to_string()))
        .collect();
    let expected: Vec<(usize, String)> =
        [(1, "source"), (2, "build"), (3, "test"), (4, "deploy"), (2, "lint"), (3, "deploy")]
            .iter()
            .map(|(d, n)| (*d, n.to_string()))
            .collect();
    assert_eq!(lines, expected, "{}", out.dump());
    let prod = graph_of(&prod(), "text");
    prod.assert_stdout_contains("deploy-prod/DataLakeVpc [Deploy, aws://333333333333/us-east-1]");
    assert_snapshot("graph_text_redundant", &out.stdout);
}
