//! Run state across runs: resume after SIGKILL, refusal to resume a changed pipeline, damaged state files,
//! incremental skips and `--force`, history and status, and approvals.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{runner_bin, single_run_dir, wait_until, Test};

/// Run the binary in `dir` (a test's directory) with `CI=1`, returning (code, stdout, stderr).
fn runner(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(runner_bin())
        .args(args)
        .current_dir(dir)
        .env("CI", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run runner");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The run's state as `--resume` and `runner status` read it: `state.json` with the journal replayed on it.
fn state(dir: &Path) -> serde_json::Value {
    let run = single_run_dir(dir);
    serde_json::to_value(engine::record::RunState::load(&run).unwrap()).unwrap()
}

/// a -> b -> c; every step appends its id to ran.txt; b blocks until `unblock` exists.
const CHAIN: &str = r#"Pipeline(name: "chain", steps: [
    Step(id: "a", kind: Shell(commands: ["echo a >> ran.txt", "echo TOKEN=from-a >> $RUNNER_OUTPUT"])),
    Step(id: "b", needs: ["a"], kind: Shell(commands: ["echo b >> ran.txt", "while [ ! -f unblock ]; do sleep 0.05; done"])),
    Step(id: "c", needs: ["b"], kind: Shell(commands: ["echo c-${steps.a.outputs.TOKEN} >> ran.txt"])),
])"#;

fn ran(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ran.txt")).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn a_run_killed_with_sigkill_resumes_with_only_its_unfinished_steps() {
    let test = Test::new().pipeline(CHAIN).args(&["run", "pipeline.ron"]);
    let mut running = test.spawn();
    let b_running = || {
        common::run_dirs(test.path())
            .first()
            .and_then(|d| engine::record::RunState::load(d).ok())
            .is_some_and(|s| s.nodes.get("b").is_some_and(|b| b.status == "running"))
    };
    assert!(wait_until(Duration::from_secs(20), || ran(test.path()) == ["a", "b"] && b_running()), "b started");
    running.signal(libc::SIGKILL);
    assert!(running.try_wait_for(Duration::from_secs(10)).is_some(), "the runner died");
    // The state written so far is readable, and says where the run stood.
    let s = state(test.path());
    assert_eq!(s["nodes"]["a"]["status"], "succeeded");
    assert_eq!(s["nodes"]["b"]["status"], "running");
    assert_eq!(s["nodes"]["c"]["status"], "pending");

    std::fs::write(test.path().join("unblock"), "").unwrap();
    let (code, stdout, stderr) = runner(test.path(), &["run", "pipeline.ron", "--resume"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("resuming run chain-"), "{stderr}");
    // a ran once (its outputs were reused by c), b again (it was interrupted), c once.
    assert_eq!(ran(test.path()), ["a", "b", "b", "c-from-a"]);
    let s = state(test.path());
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["nodes"]["a"]["status"], "up-to-date");
    assert_eq!(s["nodes"]["b"]["status"], "succeeded");
    assert_eq!(s["nodes"]["c"]["status"], "succeeded");
    assert_eq!(s["resumed"].as_array().unwrap().len(), 1);
}

#[test]
fn a_failed_run_resumes_from_the_failed_step() {
    let pipeline = r#"Pipeline(name: "flaky", steps: [
    Step(id: "a", kind: Shell(commands: ["echo a >> ran.txt"])),
    Step(id: "b", needs: ["a"], kind: Shell(commands: ["echo b >> ran.txt", "test -f fixed"])),
    Step(id: "c", needs: ["b"], kind: Shell(commands: ["echo c >> ran.txt"])),
])"#;
    let test = Test::new().pipeline(pipeline);
    let (code, ..) = runner(test.path(), &["run", "pipeline.ron"]);
    assert_eq!(code, 1);
    std::fs::write(test.path().join("fixed"), "").unwrap();
    let (code, out, err) = runner(test.path(), &["run", "pipeline.ron", "--resume"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(test.path()), ["a", "b", "b", "c"]);
    // A succeeded run has nothing to resume.
    let (code, _, err) = runner(test.path(), &["run", "pipeline.ron", "--resume"]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing to resume"), "{err}");
}

#[test]
fn a_resume_refuses_a_pipeline_whose_completed_steps_changed_unless_allowed() {
    let pipeline = r#"Pipeline(name: "changed", steps: [
    Step(id: "a", kind: Shell(commands: ["echo a >> ran.txt"])),
    Step(id: "b", needs: ["a"], kind: Shell(commands: ["echo b >> ran.txt", "test -f fixed"])),
])"#;
    let test = Test::new().pipeline(pipeline);
    assert_eq!(runner(test.path(), &["run", "pipeline.ron"]).0, 1);
    std::fs::write(test.path().join("pipeline.ron"), pipeline.replace("echo a >>", "echo A >>")).unwrap();
    std::fs::write(test.path().join("fixed"), "").unwrap();
    let (code, _, err) = runner(test.path(), &["run", "pipeline.ron", "--resume"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot resume run changed-") && err.contains("`a`") && err.contains("--allow-changed"),
        "{err}"
    );
    assert_eq!(ran(test.path()), ["a", "b"], "nothing ran");
    let (code, ..) = runner(test.path(), &["run", "pipeline.ron", "--resume", "--allow-changed"]);
    assert_eq!(code, 0);
    assert_eq!(ran(test.path()), ["a", "b", "A", "b"], "the changed step and what follows ran again");
}

#[test]
fn damaged_state_files_give_a_clear_error_not_a_panic() {
    let test =
        Test::new().pipeline(r#"Pipeline(name: "damaged", steps: [Step(id: "a", kind: Shell(commands: ["false"]))])"#);
    assert_eq!(runner(test.path(), &["run", "pipeline.ron"]).0, 1);
    let file = single_run_dir(test.path()).join("state.json");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    let (code, _, err) = runner(test.path(), &["status", "pipeline.ron"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("state.json is damaged"), "{err}");
    let (code, out, _) = runner(test.path(), &["history", "pipeline.ron"]);
    assert_eq!(code, 0);
    assert!(out.contains("is damaged"), "{out}");
    // A run whose record is damaged cannot be continued: `--resume` says so and starts a new run.
    let (code, _, err) = runner(test.path(), &["run", "pipeline.ron", "--resume"]);
    assert_eq!(code, 1, "the step fails again: {err}");
    assert!(err.contains("state.json is damaged") && err.contains("starting a new run"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(common::run_dirs(test.path()).len(), 2);
}

#[test]
fn history_and_status_show_past_runs_and_their_steps() {
    let test = Test::new().pipeline(
        r#"Pipeline(name: "hist", steps: [
    Step(id: "ok", kind: Shell(commands: ["echo fine"])),
    Step(id: "bad", kind: Shell(commands: ["exit 3"])),
])"#,
    );
    runner(test.path(), &["run", "pipeline.ron"]);
    let (code, out, _) = runner(test.path(), &["history", "pipeline.ron"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("hist-") && lines[1].ends_with("failed"), "{out}");
    let (code, out, _) = runner(test.path(), &["status", "pipeline.ron"]);
    assert_eq!(code, 0);
    assert!(out.contains("ok") && out.contains("succeeded") && out.contains("ok.log"), "{out}");
    assert!(out.contains("bad") && out.contains("failed") && out.contains("exited with code 3"), "{out}");
}

const INCREMENTAL: &str = r#"Pipeline(name: "inc", steps: [
    Step(id: "build", kind: Shell(commands: ["echo built >> count.txt", "echo ARTIFACT=v$(cat input.txt) >> $RUNNER_OUTPUT"]), incremental: true, inputs: ["input.txt"]),
    Step(id: "use", needs: ["build"], kind: Shell(commands: ["echo $ARTIFACT >> used.txt"]), incremental: true),
    Step(id: "always", needs: ["build"], kind: Shell(commands: ["echo x >> always.txt"])),
])"#;

fn count(dir: &Path, file: &str) -> usize {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default().lines().count()
}

#[test]
fn incremental_steps_are_up_to_date_until_an_input_changes_and_force_overrides() {
    let test = Test::new().pipeline(INCREMENTAL).write("input.txt", "1");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "pipeline.ron", "--output", "json"];
        args.extend_from_slice(extra);
        let (code, out, err) = runner(test.path(), &args);
        assert_eq!(code, 0, "{out}{err}");
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "node_finished")
            .map(|e| (e["node"].as_str().unwrap().to_string(), e["status"].as_str().unwrap().to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let first = run(&[]);
    assert_eq!(first["build"], "succeeded");
    let second = run(&[]);
    assert_eq!(second["build"], "up_to_date");
    assert_eq!(second["use"], "up_to_date");
    assert_eq!(second["always"], "succeeded", "steps that do not opt in always run");
    assert_eq!(count(test.path(), "count.txt"), 1);
    assert_eq!(count(test.path(), "always.txt"), 2);
    // Outputs of an up-to-date step still flow.
    assert_eq!(std::fs::read_to_string(test.path().join("used.txt")).unwrap(), "v1\n");

    std::fs::write(test.path().join("input.txt"), "2").unwrap();
    let third = run(&[]);
    assert_eq!(third["build"], "succeeded");
    assert_eq!(third["use"], "succeeded", "a changed output reaches what depends on it");
    assert_eq!(std::fs::read_to_string(test.path().join("used.txt")).unwrap(), "v1\nv2\n");

    let forced = run(&["--force-step", "use"]);
    assert_eq!(forced["build"], "up_to_date");
    assert_eq!(forced["use"], "succeeded");
    let all = run(&["--force"]);
    assert_eq!(all["build"], "succeeded");
    assert_eq!(count(test.path(), "count.txt"), 3);
}

#[test]
fn an_unknown_forced_step_is_refused_with_a_suggestion() {
    let test = Test::new().pipeline(INCREMENTAL).write("input.txt", "1");
    let (code, _, err) = runner(test.path(), &["run", "pipeline.ron", "--force-step", "biuld"]);
    assert_eq!(code, 2);
    assert!(err.contains("`biuld` is not a step") && err.contains("did you mean `build`?"), "{err}");
}

const GATED: &str = r#"Pipeline(name: "gated", steps: [
    Step(id: "test", kind: Shell(commands: ["echo tested >> ran.txt"])),
    Step(id: "gate", needs: ["test"], kind: Approval(message: "deploy to prod?")),
    Step(id: "prod", needs: ["gate"], kind: Shell(commands: ["echo prod-$APPROVED_BY >> ran.txt"])),
])"#;

#[test]
fn an_approval_given_up_front_lets_the_stage_run() {
    let test = Test::new().pipeline(GATED);
    let (code, out, err) = runner(test.path(), &["run", "pipeline.ron", "--approve", "gate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(test.path()), ["tested", "prod---approve"]);
}

#[test]
fn an_approval_in_ci_fails_at_once_saying_how_to_approve() {
    let test = Test::new().pipeline(GATED);
    let started = std::time::Instant::now();
    let (code, out, _) = runner(test.path(), &["run", "pipeline.ron"]);
    assert_eq!(code, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.contains("needs a person's approval") && out.contains("runner approve pipeline.ron gate"), "{out}");
    assert!(out.contains("--approve gate"), "{out}");
    assert_eq!(ran(test.path()), ["tested"], "prod did not run");
}

#[test]
fn runner_approve_from_another_process_releases_a_waiting_run() {
    let test = Test::new().pipeline(GATED).env_remove("CI").args(&["run", "pipeline.ron", "--output", "plain"]);
    let running = test.spawn();
    let waiting = wait_until(Duration::from_secs(20), || {
        common::run_dirs(test.path())
            .first()
            .and_then(|d| std::fs::read_to_string(d.join("gate.log")).ok())
            .is_some_and(|l| l.contains("waiting for approval"))
    });
    assert!(waiting, "the gate waits: {}", running.stdout());
    assert_eq!(ran(test.path()), ["tested"]);
    let (code, out, err) = runner(test.path(), &["approve", "pipeline.ron", "gate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("approved `gate` of run gated-"), "{out}");
    let output = running.wait_for_exit(Duration::from_secs(20));
    output.assert_code(0);
    assert_eq!(ran(test.path()), ["tested", "prod-runner approve"]);
}

#[test]
fn a_rejected_approval_fails_the_gate_and_skips_the_stage() {
    let test = Test::new().pipeline(GATED).env_remove("CI").args(&["run", "pipeline.ron", "--output", "plain"]);
    let running = test.spawn();
    assert!(wait_until(Duration::from_secs(20), || {
        common::run_dirs(test.path())
            .first()
            .and_then(|d| std::fs::read_to_string(d.join("gate.log")).ok())
            .is_some_and(|l| l.contains("waiting for approval"))
    }));
    let (code, ..) = runner(test.path(), &["approve", "pipeline.ron", "gate", "--reject"]);
    assert_eq!(code, 0);
    let output = running.wait_for_exit(Duration::from_secs(20));
    output.assert_code(1);
    output.assert_stdout_contains("was rejected by runner approve");
    assert_eq!(ran(test.path()), ["tested"]);
}
