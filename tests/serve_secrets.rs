//! A Source's token (HTTPS, from the environment) against a real smart-HTTP git server that demands it: the
//! server's polls ask the remote with it, runs fetch with it, and it reaches no page, no API answer, no record.

mod common;
mod git_http;
mod serve_support;

use common::{bare_clone, main_and_dev_repository, unique_secret, Test};
use git_http::GitHttpServer;
use serve_support::{serve, with_secrets};

#[test]
fn a_sources_token_is_used_by_polls_and_runs_and_shown_nowhere() {
    let work = main_and_dev_repository();
    let root = bare_clone(&work);
    let token = unique_secret("tok");
    let git = GitHttpServer::start(root.path(), Some(&token));
    let text = format!(
        r#"Pipeline(name: "app", steps: [
            Step(id: "source", kind: Source(repository: "{}", reference: Branch("main"), auth: Token(Env("GIT_TOKEN")))),
            Step(id: "build", needs: ["source"], kind: Shell(commands: ["cat file.txt"])),
        ])"#,
        git.url("infra.git")
    );
    let test = with_secrets(Test::new()).pipeline(&text).env("GIT_TOKEN", &token);
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1s"]);
    server.wait_for_run("app", &work.rev_parse("main"), "succeeded");
    let next = work.commit_file("file.txt", "next\n", "next");
    work.git(&["push", "-q", root.path().join("infra.git").to_str().unwrap(), "main"]);
    let run = server.wait_for_run("app", &next, "succeeded");
    let id = run["run_id"].as_str().unwrap();
    for path in [
        "/".to_string(),
        "/pipelines/app".to_string(),
        format!("/pipelines/app/runs/{id}"),
        format!("/pipelines/app/runs/{id}/logs/source"),
        "/api/pipelines".to_string(),
        "/api/pipelines/app".to_string(),
        "/api/pipelines/app/runs".to_string(),
        format!("/api/pipelines/app/runs/{id}"),
        format!("/api/pipelines/app/runs/{id}/events"),
        format!("/api/pipelines/app/runs/{id}/logs/source"),
    ] {
        let (status, body) = server.get(&path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(&token), "the token is in {path}:\n{body}");
    }
    assert!(!server.running.stderr().contains(&token));
    let mut files = 0;
    let mut stack = vec![test.path().join(".runner")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else if let Ok(bytes) = std::fs::read(entry.path()) {
                files += 1;
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "the token is in {}",
                    entry.path().display()
                );
            }
        }
    }
    assert!(files > 10, "{files} files");
}
