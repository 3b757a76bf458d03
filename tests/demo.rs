//! The main job, as `scripts/demo` runs it, with this build's binary: the configuration written to Parameter Store, the
//! prod account bootstrapped, a git repository made from this working copy, `runner run pipelines/prod.ron` through
//! clone, self-update, `npm ci` and `cdk synth` of datalake/, publish, approval, deploy, outputs to Parameter Store and
//! the smoke test, then the same run again with nothing to do, and the listing of stacks and parameters.
//!
//! node_modules are kept under the user's `$HOME/.cache/runner-datalake/node_modules` (by the lock file's hash), so
//! only the first run on a machine installs them; the rest of the demo's state lives in a temporary directory.

mod common;

use std::process::{Command, Stdio};

use common::{repo_root, runner_bin};

#[test]
fn the_demo_delivers_the_prod_data_lake_then_finds_nothing_to_do() {
    let python = std::env::var("RUNNER_MOTO_PYTHON").ok();
    let dir = tempfile::Builder::new().prefix("runner-demo-").tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let real_home = std::env::var("HOME").expect("HOME");
    let mut command = Command::new(repo_root().join("scripts/demo"));
    command
        .args(["--output", "json"])
        .current_dir(repo_root())
        .env("RUNNER_BIN", runner_bin())
        .env("DEMO_DIR", dir.path().join("demo"))
        // The assembly and npm's own cache in the test's home; node_modules where every run finds them.
        .env("HOME", &home)
        .env("DATALAKE_NODE_MODULES_CACHE", common::node_modules_cache())
        .env("RUNNER_VENV", format!("{real_home}/.cache/runner-venv"))
        .env("CI", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if let Some(python) = python {
        // The virtualenv scripts/moto uses, as scripts/test installed it.
        let venv = std::path::Path::new(&python).parent().and_then(|b| b.parent()).unwrap().to_path_buf();
        command.env("RUNNER_VENV", venv);
    }
    let out = command.output().expect("run scripts/demo");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let dump = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(out.status.success(), "scripts/demo failed\n{dump}");

    // Two runs, each a JSON event stream, between the plan and the listing.
    let events: Vec<serde_json::Value> =
        stdout.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let starts: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| e["event"] == "run_started").map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 2, "two runs of pipelines/prod.ron\n{dump}");
    let statuses = |run: &[serde_json::Value]| -> std::collections::BTreeMap<String, String> {
        run.iter()
            .filter(|e| e["event"] == "node_finished")
            .map(|e| (e["node"].as_str().unwrap().to_string(), e["status"].as_str().unwrap().to_string()))
            .collect()
    };
    let first = statuses(&events[starts[0]..starts[1]]);
    let second = statuses(&events[starts[1]..]);
    let stacks = ["deploy/Prod-Vpc", "deploy/Prod-S3BucketZones", "deploy/Prod-DynamoDb", "deploy/Prod-Iam"];
    for node in
        ["source", "self-update", "synth", "approve", "outputs", "read-back", "smoke-test"].iter().chain(&stacks)
    {
        assert_eq!(first.get(*node).map(String::as_str), Some("succeeded"), "first run, {node}\n{dump}");
    }
    let assets: Vec<&String> = first.keys().filter(|n| n.starts_with("publish/")).collect();
    assert_eq!(assets.len(), 4, "one template per stack: {assets:?}\n{dump}");
    // Nothing changed: the synth, every asset, every stack and every parameter say so.
    assert_eq!(second["synth"], "up_to_date", "{dump}");
    for node in &stacks {
        assert_eq!(second[*node], "up_to_date", "second run, {node}\n{dump}");
    }
    for asset in &assets {
        assert_eq!(&second[asset.as_str()], "unchanged", "second run, {asset}\n{dump}");
    }
    assert_eq!(second["outputs"], "unchanged", "{dump}");
    assert_eq!(second["smoke-test"], "succeeded", "{dump}");
    let approved = events[starts[0]..]
        .iter()
        .find(|e| e["event"] == "node_finished" && e["node"] == "approve")
        .map(|e| e["outputs"]["APPROVED_BY"].clone());
    assert_eq!(approved, Some(serde_json::json!("--approve")), "{dump}");

    // plan --diff after the runs: the stacks the run synthesizes, previewed from the assembly it left, unchanged.
    for stack in ["Prod-Vpc", "Prod-S3BucketZones", "Prod-DynamoDb", "Prod-Iam"] {
        let line = format!("deploy/{stack} (aws://333333333333/us-east-1): no changes");
        assert!(stdout.contains(&line), "plan --diff: no `{line}`\n{dump}");
    }

    // The listing: the stage's stacks in the prod account, its outputs in Parameter Store.
    for stack in ["Prod-Vpc", "Prod-S3BucketZones", "Prod-DynamoDb", "Prod-Iam", "CDKToolkit"] {
        assert!(stdout.contains(&format!("  {stack} ")), "{stack} is not listed\n{dump}");
    }
    for parameter in [
        "/DataLake/Prod/vpc_id",
        "/DataLake/Prod/subnet_id_3",
        "/DataLake/Prod/route_table_1",
        "/DataLake/Prod/shared_security_group_id",
        "/DataLake/Prod/s3_kms_key",
        "/DataLake/Prod/s3_raw_bucket",
        "/DataLake/Prod/cross_account_dynamodb_role_arn",
        "/DataLake/Dev/vpc_cidr",
    ] {
        assert!(stdout.contains(parameter), "{parameter} is not listed\n{dump}");
    }
    assert!(stdout.contains("prod-datalake-333333333333-us-east-1-raw"), "{dump}");
}
