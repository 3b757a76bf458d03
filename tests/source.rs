//! Source steps: cloning a local git repository at a branch, a tag or a commit, and `--source-dir`.

mod common;

use common::*;

/// A repository whose `file.txt` says where it is:
///
/// ```text
/// main:  c1 "v1" (tag v1, annotated) -- c2 "main"
/// dev:                               \- c3 "dev"      (from c1)
/// ```
struct Fixture {
    repo: GitRepo,
    c1: String,
    c2: String,
    c3: String,
}

fn fixture() -> Fixture {
    let repo = GitRepo::new();
    let c1 = repo.commit_file("file.txt", "v1\n", "first: v1");
    repo.tag("v1");
    repo.branch("dev");
    let c2 = repo.commit_file("file.txt", "main\n", "second: main");
    repo.checkout("dev");
    let c3 = repo.commit_file("file.txt", "dev\n", "third: dev");
    repo.checkout("main");
    Fixture { repo, c1, c2, c3 }
}

/// A pipeline cloning `repository` at `reference` (a RON value, or empty for the default), then a step that copies
/// `file.txt` and the Source's outputs to absolute paths in `out_dir`.
fn clone_pipeline(repository: &str, reference: &str, out_dir: &str) -> String {
    let reference = if reference.is_empty() { String::new() } else { format!(", reference: {reference}") };
    format!(
        r#"Pipeline(
    name: "source",
    steps: [
        Step(id: "source", kind: Source(repository: "{repository}"{reference})),
        Step(
            id: "inspect",
            needs: ["source"],
            kind: Shell(commands: [
                "cp file.txt {out_dir}/seen.txt",
                "printf '%s' \"$COMMIT_ID\" > {out_dir}/commit.txt",
                "printf '%s' \"$BRANCH\" > {out_dir}/branch.txt",
                "printf '%s' \"${{steps.source.outputs.COMMIT_ID}}\" > {out_dir}/commit_subst.txt",
            ]),
        ),
    ],
)
"#
    )
}

fn run_clone(fixture: &Fixture, reference: &str) -> (Test, Output) {
    let test = Test::new();
    let text = clone_pipeline(&fixture.repo.path_str(), reference, &test.dir());
    let test = test.pipeline(&text).args(&["run", "pipeline.ron"]);
    let out = test.run();
    (test, out)
}

fn assert_checkout(test: &Test, out: &Output, file: &str, commit: &str, branch: &str) {
    out.assert_code(0);
    assert_eq!(test.read("seen.txt").as_deref(), Some(file), "wrong file.txt in the clone\n{}", out.dump());
    assert_eq!(test.read("commit.txt").as_deref(), Some(commit), "COMMIT_ID (env)\n{}", out.dump());
    assert_eq!(test.read("commit_subst.txt").as_deref(), Some(commit), "COMMIT_ID (substituted)\n{}", out.dump());
    assert_eq!(test.read("branch.txt").as_deref(), Some(branch), "BRANCH\n{}", out.dump());
}

#[test]
fn source_clones_a_branch() {
    let fixture = fixture();
    let (test, out) = run_clone(&fixture, r#"Branch("dev")"#);
    assert_eq!(fixture.repo.rev_parse("dev"), fixture.c3);
    assert_checkout(&test, &out, "dev\n", &fixture.c3, "dev");
}

#[test]
fn source_clones_a_tag() {
    let fixture = fixture();
    let (test, out) = run_clone(&fixture, r#"Tag("v1")"#);
    assert_eq!(fixture.repo.rev_parse("v1"), fixture.c1);
    // An annotated tag: COMMIT_ID is the commit it points to; a tag is detached, so BRANCH is empty.
    assert_checkout(&test, &out, "v1\n", &fixture.c1, "");
}

#[test]
fn source_clones_a_commit() {
    let fixture = fixture();
    let (test, out) = run_clone(&fixture, &format!(r#"Commit("{}")"#, fixture.c1));
    assert_checkout(&test, &out, "v1\n", &fixture.c1, "");
}

#[test]
fn source_clones_a_commit_that_no_branch_tip_points_to() {
    let fixture = fixture();
    // One more commit on main, so that c2 is neither a branch tip nor tagged.
    fixture.repo.commit_file("other.txt", "more\n", "fourth: main");
    let (test, out) = run_clone(&fixture, &format!(r#"Commit("{}")"#, fixture.c2));
    assert_checkout(&test, &out, "main\n", &fixture.c2, "");
}

#[test]
fn source_without_a_reference_clones_the_default_branch() {
    let fixture = fixture();
    let (test, out) = run_clone(&fixture, "");
    assert_checkout(&test, &out, "main\n", &fixture.c2, "main");
}

#[test]
fn source_outputs_the_commit_message() {
    let fixture = fixture();
    let test = Test::new();
    let text = format!(
        r#"Pipeline(
    name: "message",
    steps: [
        Step(id: "source", kind: Source(repository: "{}", reference: Branch("dev"))),
        Step(id: "show", needs: ["source"], kind: Shell(commands: ["printf '%s' \"$COMMIT_MESSAGE\" > {}/message.txt"])),
    ],
)
"#,
        fixture.repo.path_str(),
        test.dir()
    );
    let test = test.pipeline(&text).args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(0);
    let message = test.read("message.txt").unwrap_or_default();
    assert!(message.contains("third: dev"), "COMMIT_MESSAGE is {message:?}\n{}", out.dump());
}

#[test]
fn a_missing_branch_fails_the_step_and_names_the_branch() {
    let fixture = fixture();
    let (test, out) = run_clone(&fixture, r#"Branch("no-such-branch-7")"#);
    out.assert_code(1).assert_output_contains("no-such-branch-7");
    assert!(!test.exists("seen.txt"), "the downstream step ran\n{}", out.dump());
}

// ---------------------------------------------------------------------------------------------------------------
// --source-dir
// ---------------------------------------------------------------------------------------------------------------

/// A local checkout with a file no clone could have, and a pipeline whose Source repository is an unset variable.
fn local_checkout() -> GitRepo {
    let local = GitRepo::new();
    local.commit_file("only-here.txt", "local checkout\n", "local work");
    local
}

fn source_dir_pipeline(out_dir: &str) -> String {
    format!(
        r#"Pipeline(
    name: "source-dir",
    steps: [
        Step(id: "source", kind: Source(repository: "${{env:RUNNER_TEST_UNSET_REPO}}", reference: Branch("main"))),
        Step(
            id: "inspect",
            needs: ["source"],
            kind: Shell(commands: [
                "cp only-here.txt {out_dir}/seen.txt",
                "printf '%s' \"$COMMIT_ID\" > {out_dir}/commit.txt",
            ]),
        ),
    ],
)
"#
    )
}

#[test]
fn source_dir_uses_a_local_checkout_instead_of_cloning() {
    let local = local_checkout();
    let test = Test::new();
    let text = source_dir_pipeline(&test.dir());
    let test = test.pipeline(&text).env_remove("RUNNER_TEST_UNSET_REPO").args(&[
        "run",
        "pipeline.ron",
        "--source-dir",
        &local.path_str(),
    ]);
    let out = test.run();
    out.assert_code(0);
    assert_eq!(test.read("seen.txt").as_deref(), Some("local checkout\n"), "{}", out.dump());
    assert_eq!(test.read("commit.txt"), Some(local.head()), "COMMIT_ID from the checkout's HEAD\n{}", out.dump());
}

#[test]
fn source_dir_accepts_the_id_of_the_source_step() {
    let local = local_checkout();
    let test = Test::new();
    let text = source_dir_pipeline(&test.dir());
    let test = test.pipeline(&text).env_remove("RUNNER_TEST_UNSET_REPO").args(&[
        "run",
        "pipeline.ron",
        "--source-dir",
        &format!("source={}", local.path_str()),
    ]);
    let out = test.run();
    out.assert_code(0);
    assert_eq!(test.read("seen.txt").as_deref(), Some("local checkout\n"), "{}", out.dump());
}

#[test]
fn without_source_dir_the_unset_repository_variable_is_an_error() {
    let test = Test::new();
    let text = source_dir_pipeline(&test.dir());
    let test = test.pipeline(&text).env_remove("RUNNER_TEST_UNSET_REPO").args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(2).assert_stderr_contains("RUNNER_TEST_UNSET_REPO");
    assert!(!test.exists("seen.txt"), "{}", out.dump());
}
