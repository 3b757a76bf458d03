//! `runner serve` against real git repositories that gain commits while a real server runs, over real HTTP:
//! triggers (poll, signed webhooks, manual), the queue (superseded commits), restarts, auth, the pages.

mod common;
mod serve_support;

use common::{wait_until, GitRepo, Test};
use serde_json::json;
use serve_support::{pipeline, serve, with_secrets, Served, HOOK_SECRET, PATIENCE, TOKEN};

/// A repository with one commit on `main`.
fn repository() -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_file("app.txt", "one\n", "first");
    repo
}

/// A server whose first run (of the repository's head) has succeeded.
fn served_after_first_run(test: &Test, repo: &GitRepo, extra: &[&str]) -> Served {
    let server = serve(test, &["pipeline.ron"], extra);
    server.wait_for_run("app", &repo.head(), "succeeded");
    server.wait_idle("app");
    server
}

#[test]
fn a_commit_starts_a_run_within_the_poll_interval() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["cat app.txt"]));
    let server = served_after_first_run(&test, &repo, &["--poll", "1s"]);
    let second = repo.commit_file("app.txt", "two\n", "second");
    let run = server.wait_for_run("app", &second, "succeeded");
    assert_eq!(run["trigger"]["cause"]["kind"], "poll");
    // The run deployed the commit that started it: the Source checked it out.
    let id = run["run_id"].as_str().unwrap();
    let view = server.run("app", id);
    let source = view["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "source").unwrap().clone();
    assert_eq!(source["outputs"]["COMMIT_ID"], second);
    assert_eq!(source["outputs"]["BRANCH"], "main");
    let (_, log) = server.get(&format!("/api/pipelines/app/runs/{id}/logs/build"));
    assert_eq!(log.trim(), "two");
    // An ordinary run: `runner history` lists both.
    let history = test.run_with(&["history", "pipeline.ron"]);
    history.assert_success();
    assert_eq!(history.stdout.matches("succeeded").count(), 2, "{}", history.stdout);
}

#[test]
fn nothing_is_fetched_while_the_branch_does_not_move() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["true"]));
    let server = served_after_first_run(&test, &repo, &["--poll", "1s"]);
    let cache = test.path().join(".runner/cache/git");
    let modified = |dir: &std::path::Path| -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut all = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    all.push((e.path(), m.modified().unwrap()));
                }
            }
        }
        all.sort();
        all
    };
    let before = modified(&cache);
    server.wait_for_checks("app", 3);
    assert_eq!(modified(&cache), before, "a poll of an unmoved branch changed the fetch cache");
    assert_eq!(server.runs("app").len(), 1);
}

#[test]
fn a_signed_push_webhook_starts_a_run_at_once() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["cat app.txt"]));
    // Polling once an hour: only the webhook can start the second run within the test.
    let server = served_after_first_run(&test, &repo, &["--poll", "1h"]);
    let second = repo.commit_file("app.txt", "two\n", "second");
    let (status, body) = server.push(&repo.path_str(), "refs/heads/main", &second);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["triggered"], json!(["app"]));
    let run = server.wait_for_run("app", &second, "succeeded");
    assert_eq!(run["trigger"]["cause"]["kind"], "webhook");
}

#[test]
fn a_wrongly_signed_webhook_gets_401_and_starts_nothing() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["true"]));
    let server = served_after_first_run(&test, &repo, &["--poll", "1h"]);
    let second = repo.commit_file("app.txt", "two\n", "second");
    let body = serve_support::push_payload(&repo.path_str(), "refs/heads/main", &second);
    let (status, answer) = server.deliver("push", &body, Some("not the secret"));
    assert_eq!(status, 401, "{answer}");
    let (status, _) = server.deliver("push", &body, None);
    assert_eq!(status, 401);
    // The body changed after signing: the signature no longer matches.
    let mut tampered = server.client.post(server.url("/hooks/github"));
    tampered = tampered
        .header("x-github-event", "push")
        .header("x-hub-signature-256", serve_support::sign(HOOK_SECRET, b"{}"))
        .body(body.clone());
    assert_eq!(tampered.send().unwrap().status().as_u16(), 401);
    // Handled before the answer: nothing was queued, nothing runs.
    let p = server.pipeline("app");
    assert!(p["pipeline"]["waiting"].is_null() && p["pipeline"]["running"].is_null(), "{p:#}");
    assert_eq!(server.runs("app").len(), 1);
}

#[test]
fn a_ping_gets_200_and_a_push_nobody_follows_gets_202_and_nothing() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["true"]));
    let server = served_after_first_run(&test, &repo, &["--poll", "1h"]);
    let (status, _) = server.deliver("ping", br#"{"zen":"Keep it logically awesome."}"#, Some(HOOK_SECRET));
    assert_eq!(status, 200);
    repo.checkout_new_branch("feature");
    let feature = repo.commit_file("app.txt", "feature\n", "feature");
    let (status, body) = server.push(&repo.path_str(), "refs/heads/feature", &feature);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["triggered"], json!([]));
    let (status, body) = server.push("https://github.com/acme/other.git", "refs/heads/main", &feature);
    assert_eq!((status, body["triggered"].clone()), (202, json!([])));
    let (status, _) = server.deliver("push", b"not json", Some(HOOK_SECRET));
    assert_eq!(status, 400);
    let p = server.pipeline("app");
    assert!(p["pipeline"]["waiting"].is_null() && p["pipeline"]["running"].is_null(), "{p:#}");
    assert_eq!(server.runs("app").len(), 1);
}

#[test]
fn three_pushes_during_a_run_give_one_more_run_of_the_newest_and_the_middle_one_is_superseded() {
    let repo = repository();
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let wait = format!("while [ ! -f {} ]; do sleep 0.02; done", release.display());
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &[&wait, "cat app.txt"]));
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h"]);
    let first = repo.head();
    assert!(wait_until(PATIENCE, || server.runs("app").iter().any(|r| r["status"] == "running")));
    let pushed: Vec<String> = (2..=4)
        .map(|i| {
            let commit = repo.commit_file("app.txt", &format!("{i}\n"), &format!("commit {i}"));
            let (status, body) = server.push(&repo.path_str(), "refs/heads/main", &commit);
            assert_eq!(status, 202, "{body}");
            commit
        })
        .collect();
    let p = server.pipeline("app");
    assert_eq!(p["pipeline"]["waiting"]["commits"]["source"], pushed[2], "{p:#}");
    let superseded: Vec<&str> = p["superseded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["trigger"]["commits"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(superseded, vec![pushed[0].as_str(), pushed[1].as_str()]);
    std::fs::write(&release, "").unwrap();
    server.wait_for_run("app", &first, "succeeded");
    server.wait_for_run("app", &pushed[2], "succeeded");
    server.wait_idle("app");
    let runs = server.runs("app");
    assert_eq!(runs.len(), 2, "{runs:#?}");
    // The pipeline's page lists the skipped commits as superseded.
    let (_, page) = server.get("/pipelines/app");
    let section = &page[page.find("superseded").unwrap()..];
    assert!(section.contains(&pushed[1][..12]), "{page}");
    assert!(section.contains(&pushed[0][..12]), "{page}");
}

#[test]
fn a_server_killed_mid_run_and_started_again_never_runs_that_commit_twice() {
    let repo = repository();
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let wait = format!("while [ ! -f {} ]; do sleep 0.02; done", release.display());
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &[&wait]));
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1s"]);
    let head = repo.head();
    // Killed while its step runs (the Source has checked the commit out).
    assert!(wait_until(PATIENCE, || {
        let runs = server.runs("app");
        let Some(id) = runs.first().and_then(|r| r["run_id"].as_str()) else { return false };
        server.run("app", id)["nodes"][1]["status"] == "running"
    }));
    server.running.signal(libc::SIGKILL);
    assert!(wait_until(PATIENCE, || common::process_is_gone(server.running.pid())));
    drop(server);
    // Started again on the same state: it asks the branch (which has not moved) several times, and runs nothing.
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1s"]);
    server.wait_for_checks("app", 3);
    let runs = server.runs("app");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["commit"], head);
    assert_eq!(runs[0]["status"], "interrupted");
    let (_, page) = server.get(&format!("/pipelines/app/runs/{}", runs[0]["run_id"].as_str().unwrap()));
    assert!(page.contains("interrupted"), "{page}");
    // A new commit still runs.
    std::fs::write(&release, "").unwrap();
    let next = repo.commit_file("app.txt", "two\n", "second");
    server.wait_for_run("app", &next, "succeeded");
    assert_eq!(server.runs("app").len(), 2);
}

#[test]
fn a_manual_trigger_needs_the_token_and_runs_the_branch_again() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["true"]));
    let server = served_after_first_run(&test, &repo, &["--poll", "1h"]);
    let (status, _) = server.post("/api/pipelines/app/trigger", json!({}), false);
    assert_eq!(status, 401);
    let wrong = server.client.post(server.url("/api/pipelines/app/trigger")).bearer_auth("wrong").send().unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(server.runs("app").len(), 1);
    let (status, body) = server.post("/api/pipelines/app/trigger", json!({}), true);
    assert_eq!(status, 202, "{body}");
    assert!(wait_until(PATIENCE, || server.runs("app").iter().filter(|r| r["status"] == "succeeded").count() == 2));
    assert_eq!(server.runs("app")[0]["trigger"]["cause"]["kind"], "manual");
    // A page form without a session is sent to log in; with a session but no CSRF token it is refused.
    let form = server.client.post(server.url("/pipelines/app/trigger")).form(&[("csrf", "x")]).send().unwrap();
    assert_eq!(form.status().as_u16(), 303);
    assert!(form.headers()["location"].to_str().unwrap().starts_with("/login"));
    let login = server.client.post(server.url("/login")).form(&[("token", TOKEN), ("next", "/")]).send().unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(login.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    let forged = server
        .client
        .post(server.url("/pipelines/app/trigger"))
        .header("cookie", &cookie)
        .form(&[("csrf", "x")])
        .send()
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    // With the session's CSRF token (from the page), the form acts.
    let page = server.client.get(server.url("/")).header("cookie", &cookie).send().unwrap().text().unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf: String = page[at..].chars().take_while(|c| *c != '"').collect();
    let ok = server
        .client
        .post(server.url("/pipelines/app/trigger"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 303);
    assert!(wait_until(PATIENCE, || server.runs("app").iter().filter(|r| r["status"] == "succeeded").count() == 3));
    // The token is on no page.
    assert!(!page.contains(TOKEN));
}

#[test]
fn a_run_cancelled_from_the_api_is_interrupted() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["sleep 300"]));
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h"]);
    assert!(wait_until(PATIENCE, || server.runs("app").iter().any(|r| r["status"] == "running")));
    let id = server.runs("app")[0]["run_id"].as_str().unwrap().to_string();
    assert!(wait_until(PATIENCE, || server.run("app", &id)["nodes"][1]["status"] == "running"));
    let (status, _) = server.post(&format!("/api/pipelines/app/runs/{id}/cancel"), json!({}), false);
    assert_eq!(status, 401);
    let (status, body) = server.post(&format!("/api/pipelines/app/runs/{id}/cancel"), json!({}), true);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["stop"], "interrupt");
    assert!(wait_until(PATIENCE, || server.runs("app")[0]["status"] == "interrupted"), "{:#?}", server.runs("app"));
    assert_eq!(server.run("app", &id)["nodes"][1]["status"], "cancelled");
}

#[test]
fn approvals_are_answered_through_the_api_with_the_token() {
    let repo = repository();
    let text = format!(
        r#"Pipeline(name: "app", steps: [
            Step(id: "source", kind: Source(repository: "{}", reference: Branch("main"))),
            Step(id: "gate", needs: ["source"], kind: Approval(message: "ship it?")),
            Step(id: "deploy", needs: ["gate"], kind: Shell(commands: ["echo deployed"])),
        ])"#,
        repo.path_str()
    );
    let test = with_secrets(Test::new()).pipeline(&text);
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h"]);
    let mut id = String::new();
    assert!(wait_until(PATIENCE, || {
        let runs = server.runs("app");
        id = runs.first().and_then(|r| r["run_id"].as_str()).unwrap_or("").to_string();
        !id.is_empty() && server.run("app", &id)["nodes"][1]["status"] == "waiting"
    }));
    let (_, page) = server.get(&format!("/pipelines/app/runs/{id}"));
    assert!(page.contains("ship it?") && page.contains("approving lets these run"), "{page}");
    assert!(page.contains("deploy"), "{page}");
    let path = format!("/api/pipelines/app/runs/{id}/approvals/gate");
    assert_eq!(server.post(&path, json!({"approve": true}), false).0, 401);
    assert_eq!(server.post("/api/pipelines/app/runs/{id}/approvals/deploy", json!({"approve": true}), true).0 / 100, 4);
    let (status, body) = server.post(&path, json!({"approve": true}), true);
    assert_eq!(status, 200, "{body}");
    server.wait_for_run("app", &repo.head(), "succeeded");
    let view = server.run("app", &id);
    assert_eq!(view["nodes"][1]["outputs"]["APPROVED_BY"], "the API");
}

#[test]
fn logs_and_commands_with_markup_are_shown_as_text() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline(
        "app",
        &repo.path_str(),
        "main",
        &["echo '<script>window.pwned=1</script><img src=x onerror=alert(1)>'"],
    ));
    let server = served_after_first_run(&test, &repo, &["--poll", "1h"]);
    let id = server.runs("app")[0]["run_id"].as_str().unwrap().to_string();
    let (status, page) = server.get(&format!("/pipelines/app/runs/{id}"));
    assert_eq!(status, 200);
    assert!(!page.contains("<script>window.pwned"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(page.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"), "{page}");
    let response = server.client.get(server.url(&format!("/pipelines/app/runs/{id}"))).send().unwrap();
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

#[test]
fn without_dot_the_graph_is_drawn_as_waves() {
    let repo = repository();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let text = pipeline("app", &repo.path_str(), "main", &["true"]);
    // Two servers on one state dir, the first without `dot`, the second with it.
    let without = with_secrets(Test::new()).pipeline(&text).env("RUNNER_DOT", "none");
    let server = served_after_first_run(&without, &repo, &["--poll", "1h", "--state-dir", &state_dir]);
    let id = server.runs("app")[0]["run_id"].as_str().unwrap().to_string();
    let (_, page) = server.get(&format!("/pipelines/app/runs/{id}"));
    assert!(page.contains("class=\"waves\""), "{page}");
    assert!(!page.contains("class=\"dag\""), "no dot, no dot picture: {page}");
    assert!(page.contains(&format!("id=\"dag_{}\" class=\"dag-node s-succeeded\"", hex::encode("build"))), "{page}");
    drop(server);
    let with = with_secrets(Test::new()).pipeline(&text);
    let server = served_after_first_run(&with, &repo, &["--poll", "1h", "--state-dir", &state_dir]);
    let (_, page) = server.get(&format!("/pipelines/app/runs/{id}"));
    assert!(page.contains(&format!("<g id=\"dag_{}\" class=\"node s-succeeded\">", hex::encode("build"))), "{page}");
    assert_eq!(server.runs("app").len(), 1, "the second server ran the commit again");
}

#[test]
fn a_private_server_asks_for_the_token_to_read() {
    let repo = repository();
    let test = with_secrets(Test::new()).pipeline(&pipeline("app", &repo.path_str(), "main", &["true"]));
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h", "--private"]);
    let (status, _) = server.get("/");
    assert_eq!(status, 303);
    let (status, _) = server.get("/api/pipelines");
    assert_eq!(status, 401);
    let ok = server.client.get(server.url("/api/pipelines")).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let (status, page) = server.get("/login?next=/");
    assert_eq!(status, 200);
    assert!(page.contains("type=\"password\""));
}

#[test]
fn a_server_without_a_token_makes_one_readable_by_its_owner_only() {
    let repo = repository();
    let test = Test::new().pipeline(&pipeline("app", &repo.path_str(), "main", &["true"]));
    let running = test.spawn_with(&["serve", "pipeline.ron", "--listen", "127.0.0.1:0", "--poll", "1h"]);
    let server = serve_support::attach(running);
    let path = test.path().join(".runner/serve/token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let stderr = server.running.stderr();
    assert!(stderr.contains(".runner/serve/token") && !stderr.contains(&token), "{stderr}");
    let ok = server.client.post(server.url("/api/pipelines/app/trigger")).bearer_auth(&token).send().unwrap();
    assert_eq!(ok.status().as_u16(), 202);
    // Webhooks are refused without a secret.
    let (status, _) = server.push(&repo.path_str(), "refs/heads/main", &repo.head());
    assert_eq!(status, 401);
}

#[test]
fn invalid_pipeline_files_stop_the_server_before_it_listens() {
    let test =
        Test::new().pipeline("Pipeline(name: \"app\", steps: [Step(id: \"a\", kind: Shell(comands: [\"true\"]))])");
    let out = test.run_with(&["serve", "pipeline.ron", "--listen", "127.0.0.1:0"]);
    out.assert_code(2);
    out.assert_stderr_contains("pipeline.ron:1:");
    let test = Test::new().pipeline("Pipeline(name: \"app\", steps: [])");
    let out = test.run_with(&["serve", "pipeline.ron", "--token", "hunter2"]);
    out.assert_code(2);
    out.assert_stderr_contains("--token: not a secret source");
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

#[test]
fn pipelines_run_side_by_side_up_to_max_runs() {
    let repo = repository();
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let wait = format!("while [ ! -f {} ]; do sleep 0.02; done", release.display());
    for (max, together) in [("1", 1), ("2", 2)] {
        let test = with_secrets(Test::new())
            .write("a.ron", &pipeline("a", &repo.path_str(), "main", &[&wait]))
            .write("b.ron", &pipeline("b", &repo.path_str(), "main", &[&wait]));
        let server = serve(&test, &["a.ron", "b.ron"], &["--poll", "1h", "--max-runs", max]);
        let state = |s: &Served| {
            let list = s.json("/api/pipelines");
            let p = list["pipelines"].as_array().unwrap().clone();
            (p.iter().filter(|p| !p["running"].is_null()).count(), p.iter().filter(|p| !p["waiting"].is_null()).count())
        };
        assert!(wait_until(PATIENCE, || state(&server) == (together, 2 - together)), "{:?}", state(&server));
        std::fs::write(&release, "").unwrap();
        server.wait_for_run("a", &repo.head(), "succeeded");
        server.wait_for_run("b", &repo.head(), "succeeded");
        std::fs::remove_file(&release).unwrap();
    }
}
