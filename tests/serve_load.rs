//! `runner serve` under a burst of webhook deliveries: 200 at once (50 valid pushes for two pipelines, 150 with
//! bad signatures or bodies), over real HTTP. Every delivery is answered as it should be, the right runs start
//! (one per pipeline: the valid pushes name each branch's head), and the server's memory stays flat.

mod common;
mod serve_support;

use common::{GitRepo, Test};
use serve_support::{push_payload, serve, sign, with_secrets, Served, HOOK_SECRET};

fn burst(server: &Served, repo: &str, dev: &str, test_head: &str) -> Vec<(usize, u16)> {
    let deliveries: Vec<(usize, Vec<u8>, Option<String>, &str)> = (0..200)
        .map(|i| match i % 4 {
            // 50 valid: half for dev, half for test.
            0 => {
                let (branch, head) = if i % 8 == 0 { ("dev", dev) } else { ("test", test_head) };
                let body = push_payload(repo, &format!("refs/heads/{branch}"), head);
                let signature = sign(HOOK_SECRET, &body);
                (i, body, Some(signature), "push")
            }
            // 50 signed with another secret.
            1 => {
                let body = push_payload(repo, "refs/heads/dev", dev);
                (i, body.clone(), Some(sign("wrong", &body)), "push")
            }
            // 50 without a signature.
            2 => (i, push_payload(repo, "refs/heads/test", test_head), None, "push"),
            // 50 whose body is not JSON, correctly signed: 400.
            _ => {
                let body = format!("not json {i}").into_bytes();
                let signature = sign(HOOK_SECRET, &body);
                (i, body, Some(signature), "push")
            }
        })
        .collect();
    let url = server.url("/hooks/github");
    // One client (its connection pool) for the 200 threads, as a proxy in front of the server would be.
    let client = reqwest::blocking::Client::builder()
        // The server is on the loopback: never through a proxy of the environment (HTTP_PROXY, ALL_PROXY).
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let threads: Vec<_> = deliveries
        .into_iter()
        .map(|(i, body, signature, event)| {
            let (url, client) = (url.clone(), client.clone());
            std::thread::spawn(move || {
                let mut request = client
                    .post(&url)
                    .header("x-github-event", event)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(s) = signature {
                    request = request.header("x-hub-signature-256", s);
                }
                (i, request.send().map(|r| r.status().as_u16()).unwrap_or(0))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn two_hundred_webhook_deliveries_at_once_are_all_answered_and_start_the_right_runs() {
    let repo = GitRepo::new();
    repo.commit_file("app.txt", "one\n", "first");
    repo.checkout_new_branch("dev");
    let dev = repo.commit_file("app.txt", "dev\n", "dev");
    repo.checkout("main");
    repo.checkout_new_branch("test");
    let test_head = repo.commit_file("app.txt", "test\n", "test");
    let pipeline = |name: &str| serve_support::pipeline(name, &repo.path_str(), name, &["cat app.txt"]);
    let test = with_secrets(Test::new()).write("dev.ron", &pipeline("dev")).write("test.ron", &pipeline("test"));
    // Polling once an hour: the first poll runs each head once; the webhooks bring nothing new.
    let server = serve(&test, &["dev.ron", "test.ron"], &["--poll", "1h"]);
    server.wait_for_run("dev", &dev, "succeeded");
    server.wait_for_run("test", &test_head, "succeeded");
    server.wait_idle("dev");
    server.wait_idle("test");
    let before = server.rss_kib();

    let answers = burst(&server, &repo.path_str(), &dev, &test_head);
    for (i, status) in &answers {
        let expected = match i % 4 {
            0 => 202,
            1 | 2 => 401,
            _ => 400,
        };
        assert_eq!(*status, expected, "delivery {i}");
    }
    // Valid pushes of commits already run start nothing; then a push of a new commit starts exactly one run.
    server.wait_idle("dev");
    server.wait_idle("test");
    assert_eq!(server.runs("dev").len(), 1);
    assert_eq!(server.runs("test").len(), 1);
    repo.checkout("dev");
    let dev2 = repo.commit_file("app.txt", "dev 2\n", "dev 2");
    let answers = burst(&server, &repo.path_str(), &dev2, &test_head);
    assert!(answers.iter().all(|(i, s)| *s
        == if i % 4 == 0 {
            202
        } else if i % 4 == 3 {
            400
        } else {
            401
        }));
    server.wait_for_run("dev", &dev2, "succeeded");
    server.wait_idle("dev");
    assert_eq!(server.runs("dev").len(), 2, "{:#?}", server.runs("dev"));
    assert_eq!(server.runs("test").len(), 1, "{:#?}", server.runs("test"));

    // Memory: a third and fourth burst (400 more deliveries) leave the server where the first two did.
    let after_two = server.rss_kib();
    for _ in 0..2 {
        burst(&server, &repo.path_str(), &dev2, &test_head);
    }
    let after_four = server.rss_kib();
    eprintln!("server RSS: {before} KiB idle, {after_two} KiB after 400 deliveries, {after_four} KiB after 800");
    assert!(after_four <= after_two + 4 * 1024, "memory grew: {after_two} KiB -> {after_four} KiB");
    assert!(after_four <= before + 16 * 1024, "memory grew: {before} KiB -> {after_four} KiB");
}
