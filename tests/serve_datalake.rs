//! `runner serve` on three environments' pipelines of listed stacks (`tests/fixtures/listed`: dev, test and prod, the
//! CloudFormation data lake runner shipped before the CDK app in datalake/), against the AWS emulator and a local git
//! repository with the `dev`, `test` and `production` branches: each environment deploys when its
//! branch gets a commit, prod waits at an Approval (spliced in before its deploy, as a team would add it) until it
//! is approved, and a failed run posts a notification.

mod common;
mod emulator;
mod serve_support;

use common::{repo_root, wait_until, GitRepo, Test};
use serde_json::json;
use serve_support::{serve, with_secrets, WebhookListener, PATIENCE};

/// The fixture's pipelines and templates, as their repository holds them.
fn fixture() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/listed")
}

fn listed(name: &str) -> String {
    std::fs::read_to_string(fixture().join(format!("pipelines/{name}.ron"))).unwrap()
}

/// The fixture's prod pipeline with an Approval before its deploy.
fn prod_with_approval() -> String {
    let text = listed("prod");
    let deploy = "        Step(\n            id: \"deploy-prod\",\n            needs: [\"synth\"],";
    assert!(text.contains(deploy), "tests/fixtures/listed/pipelines/prod.ron changed shape: update this test");
    text.replacen(
        deploy,
        "        Step(id: \"approve-prod\", needs: [\"synth\"], kind: Approval(message: \"deploy to production?\")),\n        \
         Step(\n            id: \"deploy-prod\",\n            needs: [\"approve-prod\"],",
        1,
    )
}

/// A pipeline with a webhook notification added.
fn with_notification(text: &str) -> String {
    let end = text.rfind(")").unwrap();
    format!("{}    notifications: [Webhook(url: Env(\"TEAM_HOOK_URL\"))],\n)\n", &text[..end])
}

#[test]
fn three_environments_deploy_each_environment_when_its_branch_moves_and_prod_waits_for_approval() {
    let moto = emulator::Moto::start();
    let notified = WebhookListener::start();
    let port = notified.port;
    let infra = GitRepo::new();
    common::copy_dir(&fixture().join("pipelines"), &infra.path().join("pipelines"));
    infra.git(&["add", "-A"]);
    infra.git(&["commit", "-q", "-m", "the data lake"]);
    for branch in ["dev", "test", "production"] {
        infra.branch(branch);
    }
    let test = moto
        .env(with_secrets(Test::new()))
        .write("dev.ron", &with_notification(&listed("dev")))
        .write("test.ron", &with_notification(&listed("test")))
        .write("prod.ron", &with_notification(&prod_with_approval()))
        .env("DATALAKE_REPO", &infra.path_str())
        .env("TEAM_HOOK_URL", &format!("http://127.0.0.1:{port}/hook"));
    let server = serve(&test, &["dev.ron", "test.ron", "prod.ron"], &["--poll", "1s"]);
    let head = infra.rev_parse("dev");
    server.wait_for_run("dev", &head, "succeeded");
    server.wait_for_run("test", &head, "succeeded");

    // Prod waits at its approval; approving lets its deploy run.
    let mut prod_run = String::new();
    assert!(wait_until(PATIENCE, || {
        prod_run = server.runs("prod").first().and_then(|r| r["run_id"].as_str()).unwrap_or("").to_string();
        !prod_run.is_empty()
            && server.run("prod", &prod_run)["nodes"].as_array().unwrap().iter().any(|n| n["status"] == "waiting")
    }));
    let (_, page) = server.get(&format!("/pipelines/prod/runs/{prod_run}"));
    assert!(page.contains("deploy to production?") && page.contains("deploy-prod/DataLakeVpc"), "{page}");
    assert!(wait_until(PATIENCE, || notified.texts().iter().any(|b| b.contains("waits for approval"))));
    let (status, _) = server.post(
        &format!("/api/pipelines/prod/runs/{prod_run}/approvals/approve-prod"),
        json!({"approve": true}),
        true,
    );
    assert_eq!(status, 200);
    server.wait_for_run("prod", &head, "succeeded");
    for account in ["111111111111", "222222222222", "333333333333"] {
        let stacks = moto.boto(
            Some(account),
            r#"result["stacks"] = sorted(s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"])"#,
        );
        assert_eq!(stacks["stacks"], json!(["DataLakeDynamoDb", "DataLakeS3", "DataLakeVpc"]), "{account}");
    }

    // A commit to `test` runs test only.
    infra.checkout("test");
    let change = infra.commit_file("pipelines/templates/README.txt", "test change\n", "a test change");
    server.wait_for_run("test", &change, "succeeded");
    assert_eq!(server.runs("dev").len(), 1);
    assert_eq!(server.runs("prod").len(), 1);

    // A broken template on `dev`: its run fails and the team hears of it.
    infra.checkout("dev");
    let vpc = infra.path().join("pipelines/templates/vpc.yaml");
    let text =
        std::fs::read_to_string(&vpc).unwrap().replacen("AWSTemplateFormatVersion", "# AWSTemplateFormatVersion", 1);
    let broken = infra.commit_file("pipelines/templates/vpc.yaml", &text, "break the vpc template");
    server.wait_for_run("dev", &broken, "failed");
    assert!(wait_until(PATIENCE, || notified.texts().iter().any(|b| b.contains("`dev` run") && b.contains("failed"))));
    let failed = notified.texts().iter().find(|b| b.contains("`dev` run")).cloned().unwrap();
    assert!(failed.contains("`synth`") && failed.contains("/pipelines/dev/runs/"), "{failed}");
}
