//! Notifications of `runner serve`, received for real: a webhook POST to a local HTTP listener, and an SNS Publish
//! into the emulator, read back from an SQS queue subscribed to the topic.

mod common;
mod emulator;
mod serve_support;

use common::{wait_until, GitRepo, Test};
use serde_json::{json, Value};
use serve_support::{serve, with_secrets, WebhookListener as Listener, PATIENCE};

fn repository() -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_file("app.txt", "one\n", "first");
    repo
}

#[test]
fn a_failed_run_an_approval_waiting_and_a_fix_are_posted_to_the_webhook_with_a_link() {
    let listener = Listener::start();
    let repo = repository();
    let gate = tempfile::tempdir().unwrap();
    let broken = gate.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    let text = format!(
        r#"Pipeline(
            name: "app",
            steps: [
                Step(id: "source", kind: Source(repository: "{repo}", reference: Branch("main"))),
                Step(id: "build", needs: ["source"], kind: Shell(commands: ["test ! -f {broken}"])),
                Step(id: "gate", needs: ["build"], kind: Approval(message: "ship it?")),
            ],
            notifications: [Webhook(url: Env("APP_HOOK_URL"))],
        )"#,
        repo = repo.path_str(),
        broken = broken.display()
    );
    let test = with_secrets(Test::new())
        .pipeline(&text)
        .env("APP_HOOK_URL", &format!("http://127.0.0.1:{}/services/T000/B000/XXXX", listener.port));
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h", "--public-url", "https://runner.example.com"]);
    assert!(wait_until(PATIENCE, || !listener.bodies().is_empty()), "{}", server.running.stderr());
    let failed = listener.bodies()[0].clone();
    let text = failed["text"].as_str().unwrap();
    assert!(text.contains("`app` run") && text.contains("failed") && text.contains("`build`"), "{text}");
    let run_id = server.runs("app")[0]["run_id"].as_str().unwrap().to_string();
    assert!(text.contains(&format!("<https://runner.example.com/pipelines/app/runs/{run_id}|open the run>")), "{text}");

    // Fixed: the next run gets to the approval (notified), and succeeds once approved (notified as fixed).
    std::fs::remove_file(&broken).unwrap();
    let (status, _) = server.post("/api/pipelines/app/trigger", json!({}), true);
    assert_eq!(status, 202);
    assert!(wait_until(PATIENCE, || listener.bodies().len() >= 2), "{}", server.running.stderr());
    let waiting = listener.bodies()[1]["text"].as_str().unwrap().to_string();
    assert!(waiting.contains("waits for approval at `gate`: ship it?"), "{waiting}");
    let second = server.runs("app")[0]["run_id"].as_str().unwrap().to_string();
    let (status, _) =
        server.post(&format!("/api/pipelines/app/runs/{second}/approvals/gate"), json!({"approve": true}), true);
    assert_eq!(status, 200);
    assert!(wait_until(PATIENCE, || listener.bodies().len() >= 3), "{}", server.running.stderr());
    let fixed = listener.bodies()[2]["text"].as_str().unwrap().to_string();
    assert!(fixed.contains("succeeded after a failed run"), "{fixed}");
    // The webhook's URL is a secret: on no page.
    let (_, page) = server.get("/pipelines/app");
    assert!(!page.contains("/services/T000"));
}

#[test]
fn a_notification_that_cannot_be_sent_is_logged_and_the_run_goes_on() {
    let repo = repository();
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        r#"Pipeline(name: "app", steps: [
                Step(id: "source", kind: Source(repository: "{}", reference: Branch("main"))),
                Step(id: "build", needs: ["source"], kind: Shell(commands: ["false"])),
            ],
            notifications: [Webhook(url: Env("APP_HOOK_URL"), on: [Failed])],
        )"#,
        repo.path_str()
    );
    let test =
        with_secrets(Test::new()).pipeline(&text).env("APP_HOOK_URL", &format!("http://127.0.0.1:{closed}/hook"));
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h"]);
    server.wait_for_run("app", &repo.head(), "failed");
    assert!(wait_until(PATIENCE, || server.running.stderr().contains("the webhook notification #1 (failed) failed")));
    let stderr = server.running.stderr();
    assert!(!stderr.contains(&format!("{closed}/hook")), "the URL is a secret: {stderr}");
    // The server goes on: another run starts.
    let next = repo.commit_file("app.txt", "two\n", "second");
    server.push(&repo.path_str(), "refs/heads/main", &next);
    server.wait_for_run("app", &next, "failed");
}

#[test]
fn a_failed_run_is_published_to_sns() {
    let moto = emulator::Moto::start();
    let created = moto.boto(
        None,
        r#"
sns = client("sns"); sqs = client("sqs")
topic = sns.create_topic(Name="runner-notifications")["TopicArn"]
queue = sqs.create_queue(QueueName="runner-notifications")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
result["topic"] = topic; result["queue"] = queue
"#,
    );
    let topic = created["topic"].as_str().unwrap();
    let repo = repository();
    let text = format!(
        r#"Pipeline(name: "app", steps: [
                Step(id: "source", kind: Source(repository: "{}", reference: Branch("main"))),
                Step(id: "build", needs: ["source"], kind: Shell(commands: ["exit 3"])),
            ],
            notifications: [Sns(topic_arn: "{topic}", on: [Failed])],
        )"#,
        repo.path_str()
    );
    let test = moto.env(with_secrets(Test::new()).pipeline(&text));
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h"]);
    server.wait_for_run("app", &repo.head(), "failed");
    let run_id = server.runs("app")[0]["run_id"].as_str().unwrap().to_string();
    let mut message = Value::Null;
    let got = wait_until(PATIENCE, || {
        let read = moto.boto(
            None,
            &format!(
                r#"
msgs = client("sqs").receive_message(QueueUrl="{}", MaxNumberOfMessages=10).get("Messages", [])
result["bodies"] = [m["Body"] for m in msgs]
"#,
                created["queue"].as_str().unwrap()
            ),
        );
        if let Some(body) = read["bodies"].as_array().and_then(|b| b.first()) {
            message = serde_json::from_str(body.as_str().unwrap()).unwrap();
            true
        } else {
            false
        }
    });
    assert!(got, "nothing reached the queue:\n{}", server.running.stderr());
    assert_eq!(message["Subject"], "runner: app failed");
    let inner: Value = serde_json::from_str(message["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["occasion"], "failed");
    assert_eq!(inner["pipeline"], "app");
    assert!(inner["url"].as_str().unwrap().ends_with(&format!("/pipelines/app/runs/{run_id}")), "{inner}");
    assert!(inner["text"].as_str().unwrap().contains("`build`"), "{inner}");
}
