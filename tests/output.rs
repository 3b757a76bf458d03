//! What a run and a plan print, through the real binary: progress throttled in plain output (a real clone of a
//! repository of thousands of objects), a step's short result in the summary, long commands shortened in the plan,
//! and running part of a pipeline (`runner run FILE STEP`, `--only STEP`).

mod common;

use common::*;

#[test]
fn plain_output_throttles_a_clones_progress_and_never_repeats_a_line() {
    let repo = GitRepo::new();
    for i in 0..3000 {
        std::fs::write(repo.path().join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    repo.git(&["add", "."]);
    repo.git(&["commit", "-q", "-m", "three thousand files"]);
    let pipeline = format!(
        r#"Pipeline(name: "clone", steps: [Step(id: "source", kind: Source(repository: "{}"))])"#,
        repo.path_str()
    );
    let out = Test::new().pipeline(&pipeline).args(&["run", "pipeline.ron", "--output", "plain"]).run();
    out.assert_code(0);
    let progress: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("receiving objects"))
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest))
        .collect();
    // One line when it starts, then at most one every 5 s, and where it ended: a handful, not thousands.
    let allowed = 2 + out.elapsed.as_secs() as usize / 5;
    assert!(!progress.is_empty() && progress.len() <= allowed, "{} progress lines\n{}", progress.len(), out.dump());
    assert!(progress.windows(2).all(|w| w[0] != w[1]), "the same line twice\n{}", out.dump());
    assert!(progress.last().is_some_and(|l| l.contains("3002/3002")), "where it ended\n{}", out.dump());
}

#[test]
fn the_summary_shows_a_steps_short_result_and_leaves_long_ones_in_its_log() {
    let long = "x".repeat(150);
    let pipeline = format!(
        r#"Pipeline(name: "results", steps: [
    Step(id: "report", kind: Shell(commands: ["echo working", "echo 'commit abc: 12 files, 340 lines of Rust'"])),
    Step(id: "long", kind: Shell(commands: ["echo {long}"])),
    Step(id: "silent", kind: Shell(commands: ["echo VERSION=1.2 >> $RUNNER_OUTPUT"])),
    Step(id: "synth", kind: Shell(commands: [
        "echo 'synthesized 3 stacks'",
        "echo 'npm notice New major version of npm available!' >&2",
        "echo '83 feature flags are not configured.' >&2",
    ])),
])"#
    );
    let out = Test::new().pipeline(&pipeline).args(&["run", "pipeline.ron"]).run();
    out.assert_code(0);
    let row = |node: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{node} ")) && l.contains("succeeded"))
            .unwrap_or_else(|| panic!("no summary row for {node}\n{}", out.dump()))
            .to_string()
    };
    assert!(row("report").ends_with("commit abc: 12 files, 340 lines of Rust"), "{}", out.dump());
    assert!(!row("long").contains("xxxx"), "{}", out.dump());
    assert!(row("silent").ends_with("VERSION=1.2"), "{}", out.dump());
    // A tool's hints on stderr after its result on stdout are not the step's result.
    assert!(row("synth").ends_with("synthesized 3 stacks"), "{}", out.dump());
}

#[test]
fn the_plan_shortens_long_commands_and_full_shows_them_whole() {
    let command = format!("echo {}", "word ".repeat(60).trim_end());
    let pipeline =
        format!(r#"Pipeline(name: "long", steps: [Step(id: "build", kind: Shell(commands: ["{command}"]))])"#);
    let test = Test::new().pipeline(&pipeline);
    let short = test.run_with(&["plan", "pipeline.ron"]);
    short.assert_code(0);
    let line = short.stdout.lines().find(|l| l.trim_start().starts_with("build")).unwrap();
    assert!(line.chars().count() < 140, "{line}");
    assert!(line.ends_with('…'), "{line}");
    short.assert_stdout_contains("--full");
    let full = test.run_with(&["plan", "pipeline.ron", "--full"]);
    full.assert_code(0);
    full.assert_stdout_contains(&command);
}

#[test]
fn the_plan_of_a_stack_says_it_is_created_with_createstack_when_new() {
    let prod = std::fs::read_to_string(repo_root().join("tests/fixtures/listed/pipelines/prod.ron")).unwrap();
    let out = Test::new().pipeline(&prod).env("DATALAKE_REPO", ".").args(&["plan", "pipeline.ron", "--full"]).run();
    out.assert_code(0);
    let vpc = out.stdout.lines().find(|l| l.contains("deploy stack DataLakeVpc")).expect("the VPC stack's line");
    assert!(vpc.contains("created with CreateStack if new, else updated by change set"), "{vpc}");
}

/// a -> b -> c, and d on its own; each step appends its id to ran.txt; b hands c an output.
const CHAIN: &str = r#"Pipeline(name: "chain", steps: [
    Step(id: "a", kind: Shell(commands: ["echo a >> ran.txt"])),
    Step(id: "b", needs: ["a"], kind: Shell(commands: ["echo b >> ran.txt", "echo TOKEN=from-b-$(cat round) >> $RUNNER_OUTPUT"])),
    Step(id: "c", needs: ["b"], kind: Shell(commands: ["echo c-${steps.b.outputs.TOKEN} >> ran.txt"])),
    Step(id: "d", kind: Shell(commands: ["echo d >> ran.txt"])),
])"#;

fn ran(test: &Test) -> Vec<String> {
    let text = test.read("ran.txt").unwrap_or_default();
    std::fs::remove_file(test.path().join("ran.txt")).ok();
    text.lines().map(str::to_string).collect()
}

#[test]
fn a_target_step_runs_with_what_it_needs_and_nothing_after_it() {
    let test = Test::new().pipeline(CHAIN).write("round", "1");
    let out = test.run_with(&["run", "pipeline.ron", "b"]);
    out.assert_code(0);
    out.assert_stderr_contains("`b` and what it needs: 2 node(s) run");
    assert_eq!(ran(&test), ["a", "b"]);
    assert!(!out.stdout.contains("\nc "), "c is not in the summary\n{}", out.dump());
    let dry = test.run_with(&["run", "pipeline.ron", "b", "--dry-run"]);
    dry.assert_code(0);
    assert!(dry.stdout.contains("2 nodes") && !dry.stdout.contains("  d "), "{}", dry.dump());
}

#[test]
fn only_runs_a_step_alone_with_what_it_needs_from_the_latest_run() {
    let test = Test::new().pipeline(CHAIN).write("round", "1");
    test.run_with(&["run", "pipeline.ron"]).assert_code(0);
    ran(&test);
    std::fs::write(test.path().join("round"), "2").unwrap();
    let out = test.run_with(&["run", "pipeline.ron", "--only", "c", "--output", "json"]);
    out.assert_code(0);
    // Only c ran, with b's output of the first run.
    assert_eq!(ran(&test), ["c-from-b-1"]);
    let statuses = out.statuses();
    assert_eq!(statuses["c"], "succeeded");
    assert_eq!(statuses["b"], "up_to_date");
    out.assert_stderr_contains("only `c`: 1 node(s) run; what they need (a, b) is taken from earlier runs");
    let b_log = out.json_lines().into_iter().find(|e| e["event"] == "log" && e["node"] == "b").unwrap();
    assert!(b_log["line"].as_str().unwrap().starts_with("done in run chain-"), "{b_log}");
}

#[test]
fn only_without_an_earlier_run_of_what_it_needs_says_what_to_run() {
    let test = Test::new().pipeline(CHAIN).write("round", "1");
    let out = test.run_with(&["run", "pipeline.ron", "--only", "c"]);
    out.assert_code(2);
    out.assert_stderr_contains("--only `c`: `a`, `b` never succeeded");
    out.assert_stderr_contains("hint: `runner run pipeline.ron c` runs `c` and what it needs");
    assert!(ran(&test).is_empty(), "nothing ran");
}

#[test]
fn an_unknown_target_is_refused_with_the_closest_step() {
    let test = Test::new().pipeline(CHAIN).write("round", "1");
    let out = test.run_with(&["run", "pipeline.ron", "bb"]);
    out.assert_code(2);
    out.assert_stderr_contains("`bb` is not a step or node of `chain` (did you mean `b`?)");
    let resumed = test.run_with(&["run", "pipeline.ron", "b", "--resume"]);
    resumed.assert_code(2);
}
