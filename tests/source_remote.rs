//! Source steps against a real smart-HTTP git server (`git http-backend` behind a small HTTP server that demands a
//! token): tokens from the environment, a file and AWS Secrets Manager (moto), wrong and missing credentials, an
//! unreachable remote, the fetch cache under `.runner/cache/git` (shallow, reused, locked).

mod common;
mod emulator;
mod git_http;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use emulator::Moto;
use git_http::GitHttpServer;
use tempfile::TempDir;

/// A repository served over HTTP at `<url>`: `main` with two commits, `dev` from the first.
struct Remote {
    work: GitRepo,
    root: TempDir,
    server: GitHttpServer,
    token: String,
}

fn remote() -> Remote {
    remote_with(Some(unique_secret("tok")))
}

fn remote_with(token: Option<String>) -> Remote {
    let work = main_and_dev_repository();
    work.tag("v1");
    let root = bare_clone(&work);
    let server = GitHttpServer::start(root.path(), token.as_deref());
    Remote { work, root, server, token: token.unwrap_or_default() }
}

impl Remote {
    fn url(&self) -> String {
        self.server.url("infra.git")
    }

    fn bare(&self) -> PathBuf {
        self.root.path().join("infra.git")
    }

    /// Commits on `main` of the working repository and pushes it to the served repository; returns the sha.
    fn push_commit(&self, contents: &str) -> String {
        let sha = self.work.commit_file("file.txt", contents, &format!("update: {}", contents.trim()));
        self.work.git(&["push", "-q", self.bare().to_str().unwrap(), "main"]);
        sha
    }

    fn upload_packs(&self) -> Vec<git_http::Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("git-upload-pack"))
            .collect()
    }
}

/// A pipeline fetching `url` at `reference` with `auth` (RON values or empty), then a step that copies `file.txt` and
/// the Source's outputs to files in the test's directory.
fn pipeline(name: &str, url: &str, reference: &str, auth: &str, out_dir: &str) -> String {
    let reference = if reference.is_empty() { String::new() } else { format!(", reference: {reference}") };
    let auth = if auth.is_empty() { String::new() } else { format!(", auth: {auth}") };
    format!(
        r#"Pipeline(
    name: "{name}",
    steps: [
        Step(id: "source", kind: Source(repository: "{url}"{reference}{auth})),
        Step(
            id: "inspect",
            needs: ["source"],
            kind: Shell(commands: [
                "cp file.txt {out_dir}/{name}-seen.txt",
                "printf '%s' \"$COMMIT_ID\" > {out_dir}/{name}-commit.txt",
                "printf '%s' \"$BRANCH\" > {out_dir}/{name}-branch.txt",
                "printf '%s' \"$COMMIT_AUTHOR\" > {out_dir}/{name}-author.txt",
                "git log --format=%H -1 > {out_dir}/{name}-git-log.txt",
            ]),
        ),
    ],
)
"#
    )
}

fn run_source(remote: &Remote, reference: &str, auth: &str, configure: impl FnOnce(Test) -> Test) -> (Test, Output) {
    let test = Test::new();
    let text = pipeline("remote", &remote.url(), reference, auth, &test.dir());
    let test = configure(test.pipeline(&text).args(&["run", "pipeline.ron"]));
    let out = test.run();
    (test, out)
}

#[test]
fn a_token_from_the_environment_fetches_over_http_and_appears_in_no_output_log_or_state_file() {
    let remote = remote();
    let (test, out) = run_source(&remote, r#"Branch("main")"#, r#"Token(Env("RUNNER_TEST_GIT_TOKEN"))"#, |t| {
        t.env("RUNNER_TEST_GIT_TOKEN", &remote.token)
    });
    out.assert_code(0);
    assert_eq!(test.read("remote-seen.txt").as_deref(), Some("main\n"), "{}", out.dump());
    assert_eq!(test.read("remote-commit.txt"), Some(remote.work.rev_parse("main")));
    assert_eq!(test.read("remote-branch.txt").as_deref(), Some("main"));
    assert_eq!(test.read("remote-author.txt").as_deref(), Some("Runner Test <runner-test@example.com>"));
    let config = test.read(".runner/workspaces/remote/source/.git/config").unwrap_or_default();
    assert!(config.contains(&format!("url = {}", remote.url())), "the workspace's origin: {config}");
    // The workspace is a git repository: steps can run git in it.
    assert_eq!(test.read("remote-git-log.txt").map(|s| s.trim().to_string()), Some(remote.work.rev_parse("main")));
    assert!(remote.server.requests().iter().any(|r| r.authorized), "the server saw no authorized request");
    assert!(single_run_dir(test.path()).join("state.json").exists());
    assert_secret_nowhere(test.path(), &out, &remote.token);
}

#[test]
fn a_token_from_a_file_fetches_a_tag() {
    let remote = remote();
    let secrets = tempfile::Builder::new().prefix("runner-test-secret-").tempdir().unwrap();
    let file = secrets.path().join("token");
    std::fs::write(&file, format!("{}\n", remote.token)).unwrap();
    let auth = format!(r#"Token(File("{}"))"#, file.display());
    let (test, out) = run_source(&remote, r#"Tag("v1")"#, &auth, |t| t);
    out.assert_code(0);
    assert_eq!(test.read("remote-seen.txt").as_deref(), Some("main\n"), "{}", out.dump());
    assert_eq!(test.read("remote-commit.txt"), Some(remote.work.rev_parse("v1")));
    assert_eq!(test.read("remote-branch.txt").as_deref(), Some(""), "a tag is detached");
    assert_secret_nowhere(test.path(), &out, &remote.token);
}

#[test]
fn basic_authentication_sends_the_user_name_and_password() {
    let remote = remote();
    let (test, out) = run_source(
        &remote,
        r#"Branch("dev")"#,
        r#"Basic(username: "ci-bot", password: Env("RUNNER_TEST_GIT_PASSWORD"))"#,
        |t| t.env("RUNNER_TEST_GIT_PASSWORD", &remote.token),
    );
    out.assert_code(0);
    assert_eq!(test.read("remote-seen.txt").as_deref(), Some("dev\n"), "{}", out.dump());
    assert_eq!(test.read("remote-branch.txt").as_deref(), Some("dev"));
    assert_secret_nowhere(test.path(), &out, &remote.token);
}

#[test]
fn a_wrong_token_fails_with_an_error_naming_the_repository_and_branch_and_never_the_token() {
    let remote = remote();
    let wrong = unique_secret("wrong");
    let (test, out) = run_source(&remote, r#"Branch("dev")"#, r#"Token(Env("RUNNER_TEST_GIT_TOKEN"))"#, |t| {
        t.env("RUNNER_TEST_GIT_TOKEN", &wrong)
    });
    out.assert_code(1)
        .assert_output_contains(&remote.url())
        .assert_output_contains("branch `dev`")
        .assert_output_contains("rejected the credentials")
        .assert_output_contains("RUNNER_TEST_GIT_TOKEN");
    assert!(!test.exists("remote-seen.txt"), "the downstream step ran\n{}", out.dump());
    assert!(remote.server.requests().iter().all(|r| !r.authorized), "a request got through with the wrong token");
    assert_secret_nowhere(test.path(), &out, &wrong);
}

#[test]
fn a_server_demanding_credentials_from_a_source_without_auth_says_to_give_one() {
    let remote = remote();
    let (_test, out) = run_source(&remote, r#"Branch("main")"#, "", |t| t);
    out.assert_code(1)
        .assert_output_contains(&remote.url())
        .assert_output_contains("branch `main`")
        .assert_output_contains("requires authentication");
}

#[test]
fn an_unset_token_variable_stops_the_run_before_anything_starts() {
    let remote = remote();
    let test = Test::new();
    let text =
        pipeline("unset", &remote.url(), r#"Branch("main")"#, r#"Token(Env("RUNNER_TEST_UNSET_TOKEN"))"#, &test.dir());
    let test = test.pipeline(&text).env_remove("RUNNER_TEST_UNSET_TOKEN").args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(2)
        .assert_stderr_contains("environment variable `RUNNER_TEST_UNSET_TOKEN` is not set")
        .assert_stderr_contains("nothing ran: set RUNNER_TEST_UNSET_TOKEN");
    let (line, column) = position(&text, r#"Token(Env("RUNNER_TEST_UNSET_TOKEN"))"#);
    assert_diagnostic(&out, &text, line, column);
    assert!(remote.server.requests().is_empty(), "the remote was contacted: {:?}", remote.server.requests());
    assert!(!test.exists(".runner/runs"), "a run was recorded");
}

#[test]
fn a_token_variable_set_in_the_step_env_is_enough() {
    let remote = remote();
    let test = Test::new();
    let text = pipeline(
        "stepenv",
        &remote.url(),
        r#"Branch("main")"#,
        r#"Token(Env("RUNNER_TEST_STEP_TOKEN"))"#,
        &test.dir(),
    )
    .replace(
        r#"auth: Token(Env("RUNNER_TEST_STEP_TOKEN")))),"#,
        r#"auth: Token(Env("RUNNER_TEST_STEP_TOKEN"))), env: {"RUNNER_TEST_STEP_TOKEN": "${env:RUNNER_TEST_OUTER}"}),"#,
    );
    assert!(text.contains("RUNNER_TEST_OUTER"), "{text}");
    let test = test
        .pipeline(&text)
        .env_remove("RUNNER_TEST_STEP_TOKEN")
        .env("RUNNER_TEST_OUTER", &remote.token)
        .args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(0);
    assert_eq!(test.read("stepenv-seen.txt").as_deref(), Some("main\n"), "{}", out.dump());
    assert_secret_nowhere(test.path(), &out, &remote.token);
}

#[test]
fn an_unreachable_remote_fails_with_an_error_naming_the_repository_and_branch() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/nothing-listens.git");
    let test = Test::new();
    let text = pipeline("gone", &url, r#"Branch("release")"#, "", &test.dir());
    let out = test.pipeline(&text).args(&["run", "pipeline.ron"]).run();
    out.assert_code(1)
        .assert_output_contains(&url)
        .assert_output_contains("branch `release`")
        .assert_output_contains("cannot be reached");
}

#[test]
fn a_missing_branch_on_the_remote_is_named() {
    let remote = remote_with(None);
    let (_test, out) = run_source(&remote, r#"Branch("no-such-branch-9")"#, "", |t| t);
    out.assert_code(1)
        .assert_output_contains("branch `no-such-branch-9` does not exist")
        .assert_output_contains(&remote.url());
}

#[test]
fn fetches_are_shallow_and_later_runs_fetch_into_the_cache_instead_of_cloning_again() {
    let remote = remote_with(None);
    let test = Test::new();
    let text = pipeline("cached", &remote.url(), r#"Branch("main")"#, "", &test.dir());
    let test = test.pipeline(&text).args(&["run", "pipeline.ron"]);

    test.run().assert_code(0);
    let first = remote.upload_packs();
    assert!(!first.is_empty(), "no fetch");
    assert!(first.iter().all(|p| p.body.contains("deepen 1")), "the first fetch is not shallow: {first:?}");
    let caches: Vec<PathBuf> = std::fs::read_dir(test.path().join(".runner/cache/git"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(caches.len(), 1, "one cached repository: {caches:?}");
    assert!(caches[0].join("shallow").exists(), "the cache is not shallow");
    let alternates = test.read(".runner/workspaces/cached/source/.git/objects/info/alternates").unwrap_or_default();
    assert!(alternates.contains(caches[0].to_str().unwrap()), "the workspace does not use the cache: {alternates:?}");

    // Nothing new: no fetch at all.
    let out = test.run();
    out.assert_code(0).assert_output_contains("nothing to fetch");
    assert_eq!(remote.upload_packs().len(), first.len(), "a fetch without anything new");

    // A new commit: fetched into the same cache, telling the server what it has.
    let new = remote.push_commit("third on main\n");
    let out = test.run();
    out.assert_code(0);
    assert_eq!(test.read("cached-commit.txt"), Some(new.clone()), "{}", out.dump());
    assert_eq!(test.read("cached-seen.txt").as_deref(), Some("third on main\n"));
    let second = remote.upload_packs().split_off(first.len());
    assert!(second.iter().any(|p| p.body.contains(&format!("want {new}"))), "{second:?}");
    assert!(second.iter().any(|p| p.body.contains("have ")), "the second fetch is not incremental: {second:?}");
    let dirs = std::fs::read_dir(test.path().join(".runner/cache/git")).unwrap().filter_map(|e| e.ok());
    assert_eq!(dirs.filter(|e| e.path().is_dir()).count(), 1, "still one cached repository");
}

#[test]
fn a_commit_missing_from_a_shallow_cache_is_fetched_with_the_whole_history() {
    let remote = remote_with(None);
    let first = remote.work.rev_parse("main~1");
    let test = Test::new();
    let branch = pipeline("by-branch", &remote.url(), r#"Branch("main")"#, "", &test.dir());
    let commit = pipeline("by-commit", &remote.url(), &format!(r#"Commit("{first}")"#), "", &test.dir());
    let test = test.write("branch.ron", &branch).write("commit.ron", &commit);
    let out = test.run_with(&["run", "branch.ron"]);
    out.assert_code(0);
    let out = test.run_with(&["run", "commit.ron"]);
    out.assert_code(0);
    assert_eq!(test.read("by-commit-commit.txt"), Some(first), "{}", out.dump());
    assert_eq!(test.read("by-commit-seen.txt").as_deref(), Some("first\n"));
}

#[test]
fn a_run_waits_while_another_holds_the_cache_lock() {
    let remote = remote_with(None);
    let test = Test::new();
    let text = pipeline("locked", &remote.url(), r#"Branch("main")"#, "", &test.dir());
    let test = test.pipeline(&text).args(&["run", "pipeline.ron"]);
    test.run().assert_code(0);
    let lock = std::fs::read_dir(test.path().join(".runner/cache/git"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "lock"))
        .expect("a lock file next to the cached repository");
    let held = std::fs::File::open(&lock).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    std::fs::remove_file(test.path().join("locked-seen.txt")).unwrap();

    let running = test.spawn();
    assert!(
        wait_until(Duration::from_secs(20), || running.stdout().contains("waiting for it")),
        "the run did not wait for the lock\n{}",
        running.stdout()
    );
    assert!(!test.exists("locked-seen.txt"), "the run went on while the cache was locked");
    drop(held);
    let out = running.wait_for_exit(RUN_TIMEOUT);
    out.assert_code(0);
    assert_eq!(test.read("locked-seen.txt").as_deref(), Some("main\n"));
}

#[test]
fn concurrent_runs_sharing_one_cached_repository_all_succeed() {
    let remote = remote_with(None);
    let test = Test::new();
    let names = ["one", "two", "three"];
    let mut t = test;
    for name in names {
        let text = pipeline(name, &remote.url(), r#"Branch("dev")"#, "", &t.dir());
        t = t.write(&format!("{name}.ron"), &text);
    }
    let running: Vec<_> = names.iter().map(|n| t.spawn_with(&["run", &format!("{n}.ron")])).collect();
    for r in running {
        r.wait_for_exit(RUN_TIMEOUT).assert_code(0);
    }
    let dev = remote.work.rev_parse("dev");
    for name in names {
        assert_eq!(t.read(&format!("{name}-commit.txt")), Some(dev.clone()), "{name}");
        assert_eq!(t.read(&format!("{name}-seen.txt")).as_deref(), Some("dev\n"), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// AWS Secrets Manager (moto)
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_token_from_aws_secrets_manager_fetches_over_http_and_appears_nowhere() {
    let moto = Moto::start();
    let remote = remote();
    moto.boto(
        None,
        &format!(
            r#"
c = client("secretsmanager")
c.create_secret(Name="github-token", SecretString="{}")
c.create_secret(Name="ci/git", SecretString='{{"user": "ci", "token": "{}"}}')
"#,
            remote.token, remote.token
        ),
    );
    for auth in [
        r#"Token(Secret(name: "github-token"))"#,
        r#"Token(Secret(name: "ci/git", region: "us-east-1", key: "token"))"#,
    ] {
        let (test, out) = run_source(&remote, r#"Branch("main")"#, auth, |t| moto.env(t));
        out.assert_code(0);
        assert_eq!(test.read("remote-seen.txt").as_deref(), Some("main\n"), "{auth}\n{}", out.dump());
        assert_secret_nowhere(test.path(), &out, &remote.token);
    }
}

#[test]
fn a_missing_secret_fails_naming_the_secret_repository_and_branch() {
    let moto = Moto::start();
    let remote = remote();
    let (_test, out) =
        run_source(&remote, r#"Branch("main")"#, r#"Token(Secret(name: "no-such-secret"))"#, |t| moto.env(t));
    out.assert_code(1)
        .assert_output_contains("`no-such-secret`")
        .assert_output_contains("ResourceNotFound")
        .assert_output_contains(&remote.url())
        .assert_output_contains("branch `main`");
    assert!(remote.server.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// SSH and validation (no SSH server here: what can be checked without one)
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_missing_ssh_key_file_fails_naming_the_key_repository_and_branch() {
    let test = Test::new();
    let text = pipeline(
        "ssh",
        "git@git.example.invalid:acme/infra.git",
        r#"Branch("main")"#,
        r#"SshKey(path: "/nonexistent/runner-test-key")"#,
        &test.dir(),
    );
    let out = test.pipeline(&text).args(&["run", "pipeline.ron"]).run();
    out.assert_code(1)
        .assert_output_contains("the SSH key /nonexistent/runner-test-key does not exist")
        .assert_output_contains("git@git.example.invalid:acme/infra.git at branch `main`");
}

#[test]
fn validate_rejects_a_token_for_an_ssh_repository_and_an_ssh_key_for_https() {
    let text = r#"Pipeline(
    name: "auth",
    steps: [
        Step(id: "a", kind: Source(repository: "git@github.com:acme/a.git", auth: Token(Env("GITHUB_TOKEN")))),
        Step(id: "b", kind: Source(repository: "https://github.com/acme/b.git", auth: SshKey(path: "~/.ssh/id"))),
        Step(id: "c", kind: Source(repository: "http://git.example.com/c.git", auth: Token(Env("GITHUB_TOKEN")))),
    ],
)
"#;
    let test = Test::new().pipeline(text).args(&["validate", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(2)
        .assert_stderr_contains("a token or password needs an https:// repository")
        .assert_stderr_contains("an SSH key needs an SSH repository")
        .assert_stderr_contains("unencrypted")
        .assert_stderr_contains("3 errors");
}

#[test]
fn credentials_written_into_the_repository_url_are_scrubbed_from_every_output_and_file() {
    let remote = remote();
    let url = remote.url().replace("http://", &format!("http://ci:{}@", remote.token));
    let test = Test::new();
    // The pipeline file names the variable; the URL with the password is only in the environment.
    let text = pipeline("inline", "${env:RUNNER_TEST_REPO_URL}", r#"Branch("no-such-branch")"#, "", &test.dir());
    let test = test.pipeline(&text).env("RUNNER_TEST_REPO_URL", &url);
    let plan = test.run_with(&["plan", "pipeline.ron"]);
    plan.assert_code(0);
    assert!(!plan.combined().contains(&remote.token), "plan shows the password\n{}", plan.dump());
    let out = test.run_with(&["run", "pipeline.ron"]);
    out.assert_code(1)
        .assert_output_contains("branch `no-such-branch` does not exist")
        .assert_output_contains("http://***@127.0.0.1");
    assert_secret_nowhere(test.path(), &out, &remote.token);
}

#[test]
fn without_a_reference_the_remotes_default_branch_is_fetched() {
    let remote = remote_with(None);
    // The served repository's HEAD names `dev`, not `main`.
    git_in(&remote.bare(), &["symbolic-ref", "HEAD", "refs/heads/dev"]);
    let (test, out) = run_source(&remote, "", "", |t| t);
    out.assert_code(0);
    assert_eq!(test.read("remote-seen.txt").as_deref(), Some("dev\n"), "{}", out.dump());
    assert_eq!(test.read("remote-branch.txt").as_deref(), Some("dev"));
}
