//! Self-updating pipelines with real git repositories: the pipeline's definition lives in the source it clones;
//! a commit that changes it changes the run.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{runner_bin, GitRepo};

/// The pipeline as committed in the infrastructure repository; `extra` goes into its step list.
fn definition(repo: &GitRepo, build_command: &str, extra: &str) -> String {
    format!(
        r#"Pipeline(name: "selfish", steps: [
    Step(id: "source", kind: Source(repository: "{repo}", reference: Branch("main"))),
    Step(id: "update", needs: ["source"], kind: SelfUpdate(pipeline: "pipeline.ron")),
    Step(id: "build", needs: ["update"], kind: Shell(commands: ["echo {build_command} >> $LOG"])),{extra}
])"#,
        repo = repo.path_str()
    )
}

/// Run `runner run pipeline.ron` in `dir` with the local (starting) definition; returns (code, stdout).
fn run(dir: &Path, log: &Path) -> (i32, String) {
    let out = Command::new(runner_bin())
        .args(["run", "pipeline.ron"])
        .current_dir(dir)
        .env("CI", "1")
        .env("LOG", log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn an_unchanged_definition_runs_without_a_restart() {
    let repo = GitRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let text = definition(&repo, "v1", "");
    repo.commit_file("pipeline.ron", &text, "pipeline");
    std::fs::write(dir.path().join("pipeline.ron"), &text).unwrap();
    let log = dir.path().join("log.txt");
    let (code, out) = run(dir.path(), &log);
    assert_eq!(code, 0, "{out}");
    assert_eq!(lines(&log), ["v1"]);
    assert!(out.contains("pipeline.ron is unchanged: no restart"), "{out}");
    assert!(!out.contains("restarting the run") && !out.contains("restarted once"), "{out}");
}

#[test]
fn a_commit_that_adds_a_step_restarts_the_run_with_it() {
    let repo = GitRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let started_from = definition(&repo, "v1", "");
    std::fs::write(dir.path().join("pipeline.ron"), &started_from).unwrap();
    let extra = r#"
    Step(id: "lint", needs: ["update"], kind: Shell(commands: ["echo lint >> $LOG"])),"#;
    repo.commit_file("pipeline.ron", &definition(&repo, "v1", extra), "add a lint step");
    let log = dir.path().join("log.txt");
    let (code, out) = run(dir.path(), &log);
    assert_eq!(code, 0, "{out}");
    let mut ran = lines(&log);
    ran.sort();
    assert_eq!(ran, ["lint", "v1"], "the new step ran, build once");
    assert!(out.contains("step `lint` added"), "{out}");
    assert!(out.contains("restarted once: the pipeline definition changed in the source (step `lint` added)"), "{out}");
    // The source was fetched once: reused by the restart.
    assert_eq!(out.matches("[source] fetching ").count(), 1, "{out}");
}

#[test]
fn a_commit_that_changes_a_command_runs_the_new_command() {
    let repo = GitRepo::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.ron"), definition(&repo, "v1", "")).unwrap();
    repo.commit_file("pipeline.ron", &definition(&repo, "v2", ""), "change the build");
    let log = dir.path().join("log.txt");
    let (code, out) = run(dir.path(), &log);
    assert_eq!(code, 0, "{out}");
    assert_eq!(lines(&log), ["v2"], "only the new command ran");
    assert!(out.contains("step `build` changed"), "{out}");
}

#[test]
fn a_commit_that_breaks_the_file_fails_the_update_and_nothing_further_runs() {
    let repo = GitRepo::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.ron"), definition(&repo, "v1", "")).unwrap();
    let broken = definition(&repo, "v1", "").replace(r#"needs: ["update"]"#, r#"needs: ["updat"]"#);
    repo.commit_file("pipeline.ron", &broken, "typo");
    let log = dir.path().join("log.txt");
    let (code, out) = run(dir.path(), &log);
    assert_eq!(code, 1, "{out}");
    assert!(lines(&log).is_empty(), "build did not run");
    assert!(out.contains("the pipeline definition in the source is not valid"), "{out}");
    assert!(out.contains("needs unknown step `updat`") && out.contains("pipeline.ron:4:"), "{out}");
}
