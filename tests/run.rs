//! `runner run`: concurrency, failure propagation, timeouts, retries, outputs, logs, JSON events, the summary and
//! signals.

mod common;

use std::time::Duration;

use common::*;

fn run(text: &str, extra: &[&str]) -> (Test, Output) {
    let test = Test::new().pipeline(text).args(&["run", "pipeline.ron"]).args(extra);
    let out = test.run();
    (test, out)
}

fn read_number(test: &Test, file: &str) -> u128 {
    let text = test.read(file).unwrap_or_else(|| panic!("{file} was not written"));
    text.trim().parse().unwrap_or_else(|e| panic!("{file} holds {text:?}: {e}"))
}

/// (start, end) in nanoseconds of a step that wrote `<id>.start` and `<id>.end`.
fn interval(test: &Test, id: &str) -> (u128, u128) {
    (read_number(test, &format!("{id}.start")), read_number(test, &format!("{id}.end")))
}

const TWO_SLEEPERS: &str = r#"Pipeline(
    name: "overlap",
    steps: [
        Step(id: "left", kind: Shell(commands: ["date +%s%N > left.start", "sleep 0.5", "date +%s%N > left.end"])),
        Step(id: "right", kind: Shell(commands: ["date +%s%N > right.start", "sleep 0.5", "date +%s%N > right.end"])),
    ],
)
"#;

#[test]
fn independent_steps_run_at_the_same_time() {
    let (test, out) = run(TWO_SLEEPERS, &[]);
    out.assert_code(0);
    let (left, right) = (interval(&test, "left"), interval(&test, "right"));
    assert!(
        left.0 < right.1 && right.0 < left.1,
        "the two steps did not overlap: left {left:?}, right {right:?}\n{}",
        out.dump()
    );
}

#[test]
fn jobs_1_runs_one_step_at_a_time() {
    let (test, out) = run(TWO_SLEEPERS, &["--jobs", "1"]);
    out.assert_code(0);
    let (left, right) = (interval(&test, "left"), interval(&test, "right"));
    assert!(
        left.1 <= right.0 || right.1 <= left.0,
        "the two steps overlapped with --jobs 1: left {left:?}, right {right:?}\n{}",
        out.dump()
    );
}

#[test]
fn a_step_starts_only_after_the_steps_it_needs_finish() {
    let text = r#"Pipeline(
    name: "order",
    steps: [
        Step(id: "first", kind: Shell(commands: ["date +%s%N > first.start", "sleep 0.2", "date +%s%N > first.end"])),
        Step(id: "second", needs: ["first"], kind: Shell(commands: ["date +%s%N > second.start", "date +%s%N > second.end"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    let (first, second) = (interval(&test, "first"), interval(&test, "second"));
    assert!(first.1 <= second.0, "`second` started before `first` ended: {first:?} {second:?}\n{}", out.dump());
}

#[test]
fn a_successful_run_exits_0() {
    let text = r#"Pipeline(
    name: "ok",
    steps: [
        Step(id: "one", kind: Shell(commands: ["true", "touch one.txt"])),
        Step(id: "two", needs: ["one"], kind: Shell(program: "touch", args: ["two.txt"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    assert!(test.exists("one.txt") && test.exists("two.txt"), "{}", out.dump());
}

#[test]
fn commands_stop_at_the_first_that_fails() {
    let text = r#"Pipeline(
    name: "stop",
    steps: [
        Step(id: "one", kind: Shell(commands: ["touch before.txt", "exit 4", "touch after.txt"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(1);
    assert!(test.exists("before.txt"), "{}", out.dump());
    assert!(!test.exists("after.txt"), "a command ran after one failed\n{}", out.dump());
}

#[test]
fn each_command_runs_in_its_own_shell() {
    // Joined into one script, `exit 0` would end it and `cd` would carry over.
    let text = r#"Pipeline(
    name: "shells",
    steps: [
        Step(id: "one", kind: Shell(commands: ["mkdir -p sub", "cd sub", "exit 0", "pwd > where.txt"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    assert!(test.exists("where.txt"), "a command after `exit 0` did not run, or ran in `sub`\n{}", out.dump());
    assert!(!test.exists("sub/where.txt"), "`cd` in one command changed the directory of the next\n{}", out.dump());
}

#[test]
fn working_dir_is_relative_to_the_workspace() {
    let text = r#"Pipeline(
    name: "working-dir",
    steps: [
        Step(id: "make_dir", kind: Shell(commands: ["mkdir -p app/nested"])),
        Step(id: "in_app", needs: ["make_dir"], kind: Shell(commands: ["touch here.txt"]), working_dir: "app/nested"),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    assert!(test.exists("app/nested/here.txt"), "the step did not run in its working_dir\n{}", out.dump());
}

const TWO_SLEEPERS_MAX_PARALLEL_1: &str = r#"Pipeline(
    name: "overlap",
    defaults: (max_parallel: 1),
    steps: [
        Step(id: "left", kind: Shell(commands: ["date +%s%N > left.start", "sleep 0.5", "date +%s%N > left.end"])),
        Step(id: "right", kind: Shell(commands: ["date +%s%N > right.start", "sleep 0.5", "date +%s%N > right.end"])),
    ],
)
"#;

#[test]
fn max_parallel_in_the_defaults_limits_concurrency() {
    let (test, out) = run(TWO_SLEEPERS_MAX_PARALLEL_1, &[]);
    out.assert_code(0);
    let (left, right) = (interval(&test, "left"), interval(&test, "right"));
    assert!(
        left.1 <= right.0 || right.1 <= left.0,
        "the two steps overlapped with max_parallel: 1: left {left:?}, right {right:?}\n{}",
        out.dump()
    );
}

#[test]
fn jobs_overrides_max_parallel() {
    for jobs in ["2", "0"] {
        let (test, out) = run(TWO_SLEEPERS_MAX_PARALLEL_1, &["--jobs", jobs]);
        out.assert_code(0);
        let (left, right) = (interval(&test, "left"), interval(&test, "right"));
        assert!(
            left.0 < right.1 && right.0 < left.1,
            "--jobs {jobs} did not let the steps overlap: left {left:?}, right {right:?}\n{}",
            out.dump()
        );
    }
}

#[test]
fn an_unknown_option_is_a_usage_error() {
    let text = r#"Pipeline(
    name: "usage",
    steps: [Step(id: "touch_it", kind: Shell(commands: ["touch ran.txt"]))],
)
"#;
    let (test, out) = run(text, &["--no-such-option"]);
    out.assert_code(2);
    assert!(!test.exists("ran.txt"), "{}", out.dump());
}

const FAILURE: &str = r#"Pipeline(
    name: "failure",
    steps: [
        Step(id: "bad", kind: Shell(commands: ["exit 3"])),
        Step(id: "after_bad", needs: ["bad"], kind: Shell(commands: ["touch after_bad.txt"])),
        Step(id: "after_after_bad", needs: ["after_bad"], kind: Shell(commands: ["touch after_after_bad.txt"])),
        Step(id: "slow", kind: Shell(commands: ["sleep 1", "touch slow.txt"])),
        Step(id: "later", needs: ["slow"], kind: Shell(commands: ["touch later.txt"])),
    ],
)
"#;

#[test]
fn dependents_do_not_run_when_a_need_fails() {
    let (test, out) = run(FAILURE, &[]);
    out.assert_code(1);
    assert!(!test.exists("after_bad.txt"), "a dependent of the failed step ran\n{}", out.dump());
    assert!(!test.exists("after_after_bad.txt"), "a transitive dependent of the failed step ran\n{}", out.dump());
}

#[test]
fn independent_branches_finish_after_a_failure_by_default() {
    // `later` can only start a second after `bad` failed: the run must keep going to reach it.
    let (test, out) = run(FAILURE, &[]);
    out.assert_code(1);
    assert!(test.exists("slow.txt"), "{}", out.dump());
    assert!(test.exists("later.txt"), "an independent branch did not finish after a failure\n{}", out.dump());
}

#[test]
fn fail_fast_starts_nothing_after_the_first_failure() {
    let (test, out) = run(FAILURE, &["--fail-fast"]);
    out.assert_code(1);
    assert!(!test.exists("after_bad.txt"), "{}", out.dump());
    assert!(!test.exists("later.txt"), "a step started after the failure with --fail-fast\n{}", out.dump());
}

#[test]
fn a_timeout_fails_the_step_and_kills_its_whole_process_group() {
    let text = r#"Pipeline(
    name: "timeout",
    steps: [
        Step(id: "hang", kind: Shell(commands: ["sleep 300 & echo $! > grandchild.pid; wait"]), timeout: "1s"),
        Step(id: "after_hang", needs: ["hang"], kind: Shell(commands: ["touch after_hang.txt"])),
    ],
)
"#;
    let test = Test::new().pipeline(text).args(&["run", "pipeline.ron"]).timeout(Duration::from_secs(30));
    let out = test.run();
    let mut cleanup = KillOnDrop::default();
    let grandchild = read_pid(&test.path().join("grandchild.pid"));
    if let Some(pid) = grandchild {
        cleanup.push(pid);
    }
    out.assert_code(1);
    assert!(out.elapsed < Duration::from_secs(10), "the 1s timeout took {:?}\n{}", out.elapsed, out.dump());
    assert!(!test.exists("after_hang.txt"), "{}", out.dump());
    let grandchild = grandchild.unwrap_or_else(|| panic!("the step did not write grandchild.pid\n{}", out.dump()));
    assert!(
        wait_until(Duration::from_secs(5), || process_is_gone(grandchild)),
        "the step's grandchild {grandchild} survived the timeout\n{}",
        out.dump()
    );
}

/// Fails until its third attempt; counts attempts in `attempts`.
fn flaky(retries: u32) -> String {
    format!(
        r#"Pipeline(
    name: "flaky",
    steps: [
        Step(
            id: "flaky",
            kind: Shell(commands: ["n=$(cat attempts 2>/dev/null || echo 0); n=$((n + 1)); echo $n > attempts; [ $n -ge 3 ]"]),
            retries: {retries},
            retry_backoff: "10ms",
        ),
        Step(id: "after_flaky", needs: ["flaky"], kind: Shell(commands: ["touch after_flaky.txt"])),
    ],
)
"#
    )
}

#[test]
fn a_step_is_retried_until_it_succeeds() {
    let (test, out) = run(&flaky(2), &[]);
    out.assert_code(0);
    assert_eq!(test.read("attempts").as_deref().map(str::trim), Some("3"), "{}", out.dump());
    assert!(test.exists("after_flaky.txt"), "{}", out.dump());
}

#[test]
fn a_step_fails_when_its_retries_run_out() {
    let (test, out) = run(&flaky(1), &[]);
    out.assert_code(1);
    assert_eq!(test.read("attempts").as_deref().map(str::trim), Some("2"), "{}", out.dump());
    assert!(!test.exists("after_flaky.txt"), "{}", out.dump());
}

#[test]
fn retries_are_reported_with_a_doubling_backoff() {
    let (_test, out) = run(&flaky(2), &["--output", "json"]);
    out.assert_code(0);
    let lines = out.json_lines();
    let retrying = events(&lines, "node_retrying");
    assert_eq!(retrying.len(), 2, "two retries expected\n{}", out.dump());
    for event in &retrying {
        assert_eq!(event["node"], "flaky", "{event}");
        assert!(event["reason"].is_string(), "{event}");
    }
    let delays: Vec<_> = retrying.iter().map(|e| e["delay_ms"].as_u64()).collect();
    assert_eq!(delays, [Some(10), Some(20)], "retry_backoff 10ms doubles for each next retry\n{}", out.dump());
    let attempts: Vec<_> = retrying.iter().map(|e| e["attempt"].as_u64().expect("attempt")).collect();
    assert!(attempts[0] < attempts[1], "attempts do not increase: {attempts:?}");
}

#[test]
fn retries_fall_back_to_the_defaults() {
    let text = r#"Pipeline(
    name: "flaky-defaults",
    defaults: (retries: 2, retry_backoff: "10ms"),
    steps: [
        Step(id: "flaky", kind: Shell(commands: ["n=$(cat attempts 2>/dev/null || echo 0); n=$((n + 1)); echo $n > attempts; [ $n -ge 3 ]"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    assert_eq!(test.read("attempts").as_deref().map(str::trim), Some("3"), "{}", out.dump());
}

#[test]
fn outputs_flow_to_dependents_as_env_and_substitutions() {
    let text = r#"Pipeline(
    name: "outputs",
    steps: [
        Step(id: "a", kind: Shell(commands: ["echo NAME=hello-42 >> $RUNNER_OUTPUT", "echo OTHER=x >> $RUNNER_OUTPUT"])),
        Step(id: "b", needs: ["a"], kind: Shell(commands: [
            "echo \"$NAME\" > env.txt",
            "echo ${steps.a.outputs.NAME} > subst.txt",
        ])),
        Step(id: "c", needs: ["b"], kind: Shell(program: "sh", args: ["-c", "echo $1 > transitive.txt", "sh", "${steps.a.outputs.NAME}"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    assert_eq!(test.read("env.txt").as_deref(), Some("hello-42\n"), "{}", out.dump());
    assert_eq!(test.read("subst.txt").as_deref(), Some("hello-42\n"), "{}", out.dump());
    assert_eq!(test.read("transitive.txt").as_deref(), Some("hello-42\n"), "{}", out.dump());
}

#[test]
fn step_and_default_env_reach_the_commands() {
    let text = r#"Pipeline(
    name: "env",
    defaults: (env: {"FROM_DEFAULTS": "d", "OVERRIDDEN": "default"}),
    steps: [
        Step(
            id: "show",
            kind: Shell(commands: ["echo \"$FROM_DEFAULTS $OVERRIDDEN $FROM_STEP ${env:RUNNER_TEST_FROM_RUNNER}\" > env.txt"]),
            env: {"FROM_STEP": "s", "OVERRIDDEN": "step"},
        ),
    ],
)
"#;
    let test = Test::new().pipeline(text).env("RUNNER_TEST_FROM_RUNNER", "r").args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(0);
    assert_eq!(test.read("env.txt").as_deref(), Some("d step s r\n"), "{}", out.dump());
}

#[test]
fn a_double_dollar_brace_is_a_literal_dollar_brace() {
    let text = r#"Pipeline(
    name: "literal",
    steps: [
        Step(id: "literal", kind: Shell(commands: ["echo '$${HOME}' > literal.txt"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    assert_eq!(test.read("literal.txt").as_deref(), Some("${HOME}\n"), "{}", out.dump());
}

#[test]
fn each_step_output_is_kept_in_its_log_file() {
    let text = r#"Pipeline(
    name: "logs",
    steps: [
        Step(id: "talker", kind: Shell(commands: ["echo hello-from-stdout", "echo hello-from-stderr >&2"])),
        Step(id: "quiet", needs: ["talker"], kind: Shell(commands: ["echo only-quiet"])),
    ],
)
"#;
    let (test, out) = run(text, &[]);
    out.assert_code(0);
    let run_dir = single_run_dir(test.path());
    let talker = std::fs::read_to_string(run_dir.join("talker.log")).expect("talker.log");
    assert!(talker.contains("hello-from-stdout"), "talker.log: {talker:?}");
    assert!(talker.contains("hello-from-stderr"), "talker.log: {talker:?}");
    assert!(!talker.contains("only-quiet"), "talker.log: {talker:?}");
    let quiet = std::fs::read_to_string(run_dir.join("quiet.log")).expect("quiet.log");
    assert!(quiet.contains("only-quiet"), "quiet.log: {quiet:?}");
    assert!(run_dir.join("state.json").is_file(), "no state.json in {}", run_dir.display());
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("state.json")).unwrap())
        .expect("state.json is JSON");
    assert!(state.is_object(), "state.json: {state}");
}

#[test]
fn state_dir_moves_the_run_state() {
    let text = r#"Pipeline(
    name: "state",
    steps: [Step(id: "one", kind: Shell(commands: ["echo one"]))],
)
"#;
    let test = Test::new().pipeline(text).args(&["--state-dir", "elsewhere", "run", "pipeline.ron"]);
    test.run().assert_code(0);
    let runs: Vec<_> = std::fs::read_dir(test.path().join("elsewhere").join("runs"))
        .expect("elsewhere/runs exists")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].path().join("one.log").is_file());
    assert!(!test.exists(".runner/runs"), "the default state dir was used despite --state-dir");
}

fn events<'a>(lines: &'a [serde_json::Value], event: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

#[test]
fn json_output_is_one_event_per_line() {
    let text = r#"Pipeline(
    name: "json",
    steps: [
        Step(id: "compile_step", kind: Shell(commands: ["sleep 0.3", "echo GREETING=hi >> $RUNNER_OUTPUT"])),
        Step(id: "package_step", needs: ["compile_step"], kind: Shell(commands: ["sleep 0.1", "echo packaged"])),
        Step(id: "lint_step", kind: Shell(commands: ["true"])),
    ],
)
"#;
    let (_test, out) = run(text, &["--output", "json"]);
    out.assert_code(0);
    let lines = out.json_lines();
    assert!(!lines.is_empty(), "no JSON on stdout\n{}", out.dump());
    for line in &lines {
        assert!(line["event"].is_string(), "line without `event`: {line}");
        let time = line["time"].as_str().unwrap_or_else(|| panic!("line without `time`: {line}"));
        assert!(
            time.contains('T') && (time.ends_with('Z') || time.ends_with("+00:00")),
            "`time` is not RFC 3339 UTC: {line}"
        );
    }

    assert_eq!(lines.first().unwrap()["event"], "run_started", "{}", out.dump());
    assert_eq!(lines.last().unwrap()["event"], "run_finished", "{}", out.dump());

    let started = events(&lines, "run_started");
    assert_eq!(started.len(), 1, "{}", out.dump());
    assert!(started[0]["run_id"].is_string(), "{}", started[0]);
    assert_eq!(started[0]["pipeline"], "json", "{}", started[0]);
    let nodes = started[0]["nodes"].as_array().unwrap_or_else(|| panic!("`nodes` is not a list: {}", started[0]));
    for id in ["compile_step", "package_step", "lint_step"] {
        assert!(nodes.iter().any(|n| n["id"] == id), "run_started does not list {id}: {}", started[0]);
    }

    let finished = events(&lines, "node_finished");
    for id in ["compile_step", "package_step", "lint_step"] {
        let node = finished
            .iter()
            .find(|e| e["node"] == id)
            .unwrap_or_else(|| panic!("no node_finished for {id}\n{}", out.dump()));
        assert_eq!(node["status"], "succeeded", "{node}");
        assert!(node["duration_ms"].is_u64(), "{node}");
    }
    let compile = finished.iter().find(|e| e["node"] == "compile_step").unwrap();
    assert_eq!(compile["outputs"]["GREETING"], "hi", "{compile}");

    for id in ["compile_step", "package_step", "lint_step"] {
        assert!(
            events(&lines, "node_started").iter().any(|e| e["node"] == id && e["attempt"] == 1),
            "no node_started (attempt 1) for {id}\n{}",
            out.dump()
        );
    }
    assert!(
        events(&lines, "log")
            .iter()
            .any(|e| e["node"] == "package_step" && e["stream"] == "stdout" && e["line"] == "packaged"),
        "no log event for `packaged`\n{}",
        out.dump()
    );

    let run_finished = events(&lines, "run_finished");
    assert_eq!(run_finished.len(), 1);
    let critical = run_finished[0]["critical_path"].to_string();
    assert!(
        critical.contains("compile_step") && critical.contains("package_step") && !critical.contains("lint_step"),
        "critical path should be compile_step -> package_step: {}",
        run_finished[0]
    );
    assert!(run_finished[0]["duration_ms"].is_u64(), "{}", run_finished[0]);
}

#[test]
fn json_output_reports_failed_and_skipped_steps() {
    let text = r#"Pipeline(
    name: "json-failure",
    steps: [
        Step(id: "bad", kind: Shell(commands: ["exit 3"])),
        Step(id: "after_bad", needs: ["bad"], kind: Shell(commands: ["true"])),
    ],
)
"#;
    let (_test, out) = run(text, &["--output", "json"]);
    out.assert_code(1);
    let lines = out.json_lines();
    let finished = events(&lines, "node_finished");
    let bad = finished.iter().find(|e| e["node"] == "bad").unwrap_or_else(|| panic!("{}", out.dump()));
    assert_eq!(bad["status"], "failed", "{bad}");
    assert!(
        events(&lines, "node_started").iter().all(|e| e["node"] != "after_bad"),
        "the dependent of a failed step started\n{}",
        out.dump()
    );
    if let Some(skipped) = finished.iter().find(|e| e["node"] == "after_bad") {
        assert_eq!(skipped["status"], "skipped", "{skipped}");
    }
    assert_eq!(lines.last().unwrap()["event"], "run_finished", "{}", out.dump());
}

#[test]
fn the_summary_lists_every_step_and_the_critical_path() {
    let text = r#"Pipeline(
    name: "summary",
    steps: [
        Step(id: "compile_step", kind: Shell(commands: ["sleep 0.2"])),
        Step(id: "package_step", needs: ["compile_step"], kind: Shell(commands: ["true"])),
        Step(id: "lint_step", kind: Shell(commands: ["true"])),
    ],
)
"#;
    let (_test, out) = run(text, &[]);
    out.assert_code(0);
    for id in ["compile_step", "package_step", "lint_step"] {
        out.assert_output_contains(id);
    }
    out.assert_output_contains_ci("critical path");
}

#[test]
fn plain_output_prefixes_lines_with_the_step_id() {
    let text = r#"Pipeline(
    name: "plain",
    steps: [
        Step(id: "speaker", kind: Shell(commands: ["echo distinctive-line-42"])),
    ],
)
"#;
    let (_test, out) = run(text, &["--output", "plain"]);
    out.assert_code(0);
    let combined = out.combined();
    let line = combined
        .lines()
        .find(|l| l.contains("distinctive-line-42"))
        .unwrap_or_else(|| panic!("the step's output is not shown\n{}", out.dump()));
    assert!(line.contains("speaker"), "the line is not prefixed by the step id: {line:?}");
}

#[test]
fn dry_run_runs_nothing() {
    let text = r#"Pipeline(
    name: "dry",
    steps: [Step(id: "touch_it", kind: Shell(commands: ["touch ran.txt"]))],
)
"#;
    let (test, out) = run(text, &["--dry-run"]);
    out.assert_code(0).assert_stdout_contains("touch_it");
    assert!(!test.exists("ran.txt"), "--dry-run ran a step\n{}", out.dump());
}

// ---------------------------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------------------------

const HANGING: &str = r#"Pipeline(
    name: "hanging",
    steps: [
        Step(id: "hang", kind: Shell(commands: ["sleep 300 & echo $! > gc.pid; echo $$ > child.pid; wait"])),
        Step(id: "after_hang", needs: ["hang"], kind: Shell(commands: ["touch after_hang.txt"])),
    ],
)
"#;

/// Starts the hanging pipeline and waits until its step wrote both pids: (running runner, child, grandchild).
fn start_hanging(test: &Test, cleanup: &mut KillOnDrop) -> (Running, i32, i32) {
    let mut running = test.spawn();
    let (child_file, gc_file) = (test.path().join("child.pid"), test.path().join("gc.pid"));
    let ready = wait_until(Duration::from_secs(10), || read_pid(&child_file).is_some() && read_pid(&gc_file).is_some());
    if !ready {
        let exited = running.try_wait_for(Duration::ZERO);
        panic!(
            "the step did not write its pids within 10s (runner exited: {:?})\n--- stdout\n{}\n--- stderr\n{}",
            exited.map(|o| o.code),
            running.stdout(),
            running.stderr()
        );
    }
    let (child, grandchild) = (read_pid(&child_file).unwrap(), read_pid(&gc_file).unwrap());
    cleanup.push(child);
    cleanup.push(grandchild);
    assert!(!process_is_gone(child) && !process_is_gone(grandchild), "the step's processes are not running");
    (running, child, grandchild)
}

fn assert_gone(pids: &[i32], within: Duration, out: &Output) {
    for &pid in pids {
        assert!(
            wait_until(within, || process_is_gone(pid)),
            "process {pid} is still running {within:?} after the runner exited\n{}",
            out.dump()
        );
    }
}

#[test]
fn sigint_stops_the_run_with_code_130_and_kills_the_steps() {
    let test = Test::new().pipeline(HANGING).args(&["run", "pipeline.ron"]);
    let mut cleanup = KillOnDrop::default();
    let (running, child, grandchild) = start_hanging(&test, &mut cleanup);
    running.signal(libc::SIGINT);
    let out = running.wait_for_exit(Duration::from_secs(30));
    out.assert_code(130);
    assert_gone(&[child, grandchild], Duration::from_secs(5), &out);
    assert!(!test.exists("after_hang.txt"), "a step started after SIGINT\n{}", out.dump());
    // The summary is still printed.
    out.assert_output_contains_ci("critical path");
}

#[test]
fn a_second_sigint_kills_steps_that_ignore_sigterm() {
    let text = r#"Pipeline(
    name: "stubborn",
    steps: [
        Step(id: "stubborn", kind: Shell(commands: ["trap '' TERM INT; sleep 300 & echo $! > gc.pid; echo $$ > child.pid; wait"])),
    ],
)
"#;
    let test = Test::new().pipeline(text).args(&["run", "pipeline.ron"]);
    let mut cleanup = KillOnDrop::default();
    let (mut running, child, grandchild) = start_hanging(&test, &mut cleanup);
    // Signals sent together may be merged into one: keep signalling until the runner exits.
    let first = std::time::Instant::now();
    let mut out = None;
    while out.is_none() && first.elapsed() < Duration::from_secs(4) {
        running.signal(libc::SIGINT);
        out = running.try_wait_for(Duration::from_millis(200));
    }
    let out = out.unwrap_or_else(|| {
        panic!(
            "repeated SIGINTs did not stop the run within 4s\n--- stdout\n{}\n--- stderr\n{}",
            running.stdout(),
            running.stderr()
        )
    });
    out.assert_code(130);
    assert_gone(&[child, grandchild], Duration::from_secs(5), &out);
}

#[test]
fn sigterm_stops_the_run_with_code_130_and_kills_the_steps() {
    let test = Test::new().pipeline(HANGING).args(&["run", "pipeline.ron"]);
    let mut cleanup = KillOnDrop::default();
    let (running, child, grandchild) = start_hanging(&test, &mut cleanup);
    running.signal(libc::SIGTERM);
    let out = running.wait_for_exit(Duration::from_secs(30));
    out.assert_code(130);
    assert_gone(&[child, grandchild], Duration::from_secs(5), &out);
}

#[test]
fn sigkill_of_the_runner_leaves_no_step_running() {
    let test = Test::new().pipeline(HANGING).args(&["run", "pipeline.ron"]);
    let mut cleanup = KillOnDrop::default();
    let (running, child, grandchild) = start_hanging(&test, &mut cleanup);
    running.signal(libc::SIGKILL);
    let out = running.wait_for_exit(Duration::from_secs(10));
    assert_eq!(out.signal, Some(libc::SIGKILL), "{}", out.dump());
    assert_gone(&[child, grandchild], Duration::from_secs(10), &out);
}

#[test]
fn the_shipped_example_pipeline_succeeds_on_this_repository() {
    let root = repo_root();
    let example = root.join("pipelines/example.ron");
    let out = Test::new()
        .env("EXAMPLE_REPO", root.to_str().unwrap())
        .args(&["run", example.to_str().unwrap(), "--output", "plain"])
        .run();
    out.assert_code(0);
    // The include-only datalake.ron is a shared definition, not a pipeline without a name.
    out.assert_stdout_contains("ok pipelines/datalake.ron (included)");
    out.assert_stdout_contains("ok pipelines/prod.ron");
}
