//! SSM Parameter Store both ways, against the emulator: `${ssm:NAME}` read once when the run starts with the caller's
//! credentials (a missing parameter stops the run before anything runs; SecureString values never appear in any
//! output, log or state file), and the `ParameterStore` step writing a stage's outputs, nothing on a re-run.

mod common;
mod emulator;

use common::*;
use emulator::Moto;

const QUEUE: &str = r#"{
  "AWSTemplateFormatVersion": "2010-09-09",
  "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
  "Outputs": {"QueueUrl": {"Value": {"Ref": "Queue"}}, "QueueArn": {"Value": {"Fn::GetAtt": ["Queue", "Arn"]}}}
}
"#;

/// Put parameters into the deployment account's Parameter Store (or `account`'s).
fn seed(moto: &Moto, account: Option<&str>, parameters: &[(&str, &str, &str)]) {
    let list: Vec<String> =
        parameters.iter().map(|(name, value, kind)| format!("({name:?}, {value:?}, {kind:?})")).collect();
    moto.boto(
        account,
        &format!(
            "for name, value, kind in [{}]:\n    client('ssm').put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)",
            list.join(", ")
        ),
    );
}

/// Every parameter under `path` in `account`: name -> (value, version).
fn parameters(moto: &Moto, account: Option<&str>, path: &str) -> serde_json::Value {
    moto.boto(
        account,
        &format!(
            r#"pages = client("ssm").get_paginator("get_parameters_by_path").paginate(Path={path:?}, Recursive=True)
for page in pages:
    for p in page["Parameters"]:
        result[p["Name"]] = [p["Value"], p["Version"]]"#
        ),
    )
}

#[test]
fn ssm_references_are_read_when_the_run_starts_and_choose_the_account() {
    let moto = Moto::start();
    seed(
        &moto,
        None,
        &[("/DataLake/Prod/account_id", "333333333333", "String"), ("/DataLake/Prod/region", "us-east-1", "String")],
    );
    let text = r#"Pipeline(
    name: "prod",
    parameters: {
        "environment": (default: "Prod"),
        "account": (default: "${ssm:/DataLake/${param:environment}/account_id}"),
    },
    steps: [
        Step(id: "config", kind: Shell(commands: ["echo account ${param:account} in ${ssm:/DataLake/Prod/region@us-east-1}"])),
        Step(id: "deploy", needs: ["config"], kind: Deploy(
            account: "${param:account}",
            region: "${ssm:/DataLake/Prod/region}",
            stacks: Listed([(name: "Queue", template: "queue.json")]),
        )),
    ],
)
"#;
    let t = moto.env(Test::new().pipeline(text).write("queue.json", QUEUE));
    let plan = t.run_with(&["plan", "pipeline.ron"]);
    plan.assert_success().assert_stdout_contains("account      = ${ssm:/DataLake/Prod/account_id}");

    let out = t.run_with(&["run", "pipeline.ron", "--output", "json"]);
    out.assert_success();
    out.assert_stderr_contains("reading 3 parameter(s) from SSM Parameter Store");
    out.assert_stdout_contains("account 333333333333 in us-east-1");
    let stacks = moto.boto(
        Some("333333333333"),
        r#"result["stacks"] = [s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"]]"#,
    );
    assert_eq!(stacks["stacks"], serde_json::json!(["Queue"]), "{}", out.dump());
}

#[test]
fn a_missing_ssm_parameter_stops_the_run_before_anything_runs_naming_it() {
    let moto = Moto::start();
    seed(&moto, None, &[("/DataLake/Prod/account_id", "333333333333", "String")]);
    let text = r#"Pipeline(
    name: "prod",
    steps: [
        Step(id: "first", kind: Shell(commands: ["touch ran"])),
        Step(id: "config", needs: ["first"], kind: Shell(commands: ["echo ${ssm:/DataLake/Prod/account_id} ${ssm:/DataLake/Prod/vpc_cidr}"])),
    ],
)
"#;
    let t = moto.env(Test::new().pipeline(text));
    let out = t.run_with(&["run", "pipeline.ron"]);
    out.assert_code(1);
    let (line, column) = position(text, "${ssm:/DataLake/Prod/vpc_cidr}");
    out.assert_stderr_contains(&format!(
        "SSM parameter `/DataLake/Prod/vpc_cidr` does not exist in the Parameter Store of the deployment account \
         (us-east-1) (used at pipeline.ron:{line}:{column})"
    ));
    assert!(!out.stderr.contains("`/DataLake/Prod/account_id` does not exist"), "{}", out.dump());
    assert!(!t.exists("ran"), "a step ran though a parameter is missing\n{}", out.dump());
    // What stopped it, not an account's access.
    out.assert_stderr_contains("nothing ran: the Parameter Store values the pipeline uses could not be read");
    assert!(!out.stderr.contains("cannot act in its account"), "{}", out.dump());
}

#[test]
fn secure_string_values_are_masked_in_every_output_log_and_state_file() {
    let moto = Moto::start();
    let secret = unique_secret("ssm-secure");
    // Not referenced by `${ssm:...}`: only the ParameterStore step meets it (overwritten, then read back).
    let rotated = unique_secret("ssm-rotated");
    seed(
        &moto,
        None,
        &[
            ("/app/token", &secret, "SecureString"),
            ("/app/user", "deployer", "String"),
            ("/app/rotated", &rotated, "SecureString"),
        ],
    );
    let text = r#"Pipeline(
    name: "secrets",
    steps: [
        Step(
            id: "use",
            kind: Shell(commands: [
                "echo \"token on stdout: ${ssm:/app/token} for ${ssm:/app/user}\"",
                "echo \"token on stderr: $TOKEN\" >&2",
                "echo TOKEN=$TOKEN >> $RUNNER_OUTPUT",
                "echo USER=${ssm:/app/user} >> $RUNNER_OUTPUT",
            ]),
            env: {"TOKEN": "${ssm:/app/token}"},
            incremental: true,
        ),
        Step(id: "after", needs: ["use"], kind: Shell(commands: ["echo \"got $TOKEN\"", "echo \"${steps.use.outputs.TOKEN}\" >&2"])),
        Step(id: "fail", needs: ["after"], kind: Shell(commands: ["echo \"failing with ${ssm:/app/token}\" >&2", "exit 3"])),
        Step(id: "overwrite", kind: ParameterStore(prefix: "/app/", parameters: {"rotated": "fresh-${ssm:/app/user}"})),
        Step(id: "read", needs: ["overwrite"], kind: ParameterStore(prefix: "/app/", read: ["token", "user", "rotated"])),
    ],
)
"#;
    let t = moto.env(Test::new().pipeline(text));
    let junit = t.path().join("report.xml");
    let out = t.run_with(&["run", "pipeline.ron", "--output", "json", "--junit", junit.to_str().unwrap()]);
    out.assert_code(1);
    // It was there to mask, and it was masked.
    out.assert_stdout_contains("token on stdout: *** for deployer");
    out.assert_stdout_contains("token on stderr: ***");
    assert_eq!(out.finished("use")["outputs"]["TOKEN"], "***", "{}", out.dump());
    assert_eq!(out.finished("use")["outputs"]["USER"], "deployer", "{}", out.dump());
    // Read back, a SecureString is masked; overwritten, it stays a SecureString and its old value is not shown.
    let read = &out.finished("read")["outputs"];
    assert_eq!((&read["token"], &read["user"], &read["rotated"]), (&"***".into(), &"deployer".into(), &"***".into()));
    out.assert_stdout_contains("wrote /app/rotated (a SecureString) (was a SecureString)");
    let stored = moto.boto(
        None,
        r#"p = client("ssm").get_parameter(Name="/app/rotated", WithDecryption=True)["Parameter"]
result["type"], result["value"] = p["Type"], p["Value"]"#,
    );
    assert_eq!((stored["type"].as_str(), stored["value"].as_str()), (Some("SecureString"), Some("fresh-deployer")));
    let plain = t.run_with(&["run", "pipeline.ron", "--output", "plain"]);
    plain.assert_code(1).assert_stdout_contains("failing with ***");
    plain.assert_stdout_contains("/app/rotated already holds its value (a SecureString)");
    for o in [&out, &plain, &t.run_with(&["status", "pipeline.ron"]), &t.run_with(&["history", "pipeline.ron"])] {
        assert!(!o.combined().contains(&secret), "the secret leaked\n{}", o.dump());
    }
    assert!(t.exists("report.xml"));
    assert_secret_nowhere(t.path(), &out, &secret);
    assert_secret_nowhere(t.path(), &out, &rotated);
    assert!(!plain.combined().contains(&rotated), "{}", plain.dump());
}

#[test]
fn outputs_go_to_parameter_store_and_a_rerun_writes_nothing() {
    let moto = Moto::start();
    let text = r#"Pipeline(
    name: "prod",
    steps: [
        Step(id: "deploy", kind: Deploy(
            account: "333333333333",
            region: "us-east-1",
            stacks: Listed([(name: "Queue", template: "queue.json")]),
        )),
        // In the deployment account (the caller's), for other pipelines to find.
        Step(id: "outputs", needs: ["deploy"], kind: ParameterStore(
            prefix: "/DataLake/Prod/",
            parameters: {
                "queue_url": "${steps.deploy/Queue.outputs.QueueUrl}",
                "queue_arn": "${steps.deploy/Queue.outputs.QueueArn}",
                "environment": "Prod",
            },
        )),
        // And in the target account, through its deploy role.
        Step(id: "outputs-target", needs: ["deploy"], kind: ParameterStore(
            account: "333333333333",
            region: "us-east-1",
            prefix: "/datalake/",
            parameters: {"queue_url": "${steps.deploy/Queue.outputs.QueueUrl}"},
        )),
    ],
)
"#;
    let t = moto.env(Test::new().pipeline(text).write("queue.json", QUEUE));
    let plan = t.run_with(&["plan", "pipeline.ron", "--full"]);
    plan.assert_success().assert_stdout_contains(
        "write 3 parameters under /DataLake/Prod/ to the Parameter Store of the deployment account, only where the \
         value differs",
    );
    let out = t.run_with(&["run", "pipeline.ron", "--output", "json"]);
    out.assert_success();
    let url = out.finished("deploy/Queue")["outputs"]["QueueUrl"].as_str().unwrap().to_string();
    assert_eq!(out.finished("outputs")["outputs"]["WRITTEN"], "3", "{}", out.dump());
    let written = parameters(&moto, None, "/DataLake/Prod");
    assert_eq!(written["/DataLake/Prod/queue_url"], serde_json::json!([url, 1]), "{written}");
    assert_eq!(written["/DataLake/Prod/environment"], serde_json::json!(["Prod", 1]), "{written}");
    assert!(written["/DataLake/Prod/queue_arn"][0].as_str().unwrap().starts_with("arn:aws:sqs:"), "{written}");
    let in_target = parameters(&moto, Some("333333333333"), "/datalake");
    assert_eq!(in_target["/datalake/queue_url"], serde_json::json!([url, 1]), "{in_target}");
    // Nothing in the target account under the deployment account's prefix, and the other way round.
    assert_eq!(parameters(&moto, Some("333333333333"), "/DataLake"), serde_json::json!({}));

    // Same values: nothing written, and it says so; the versions did not move.
    let again = t.run_with(&["run", "pipeline.ron", "--output", "json"]);
    again.assert_success();
    let statuses = again.statuses();
    assert_eq!(statuses["outputs"], "unchanged", "{}", again.dump());
    assert_eq!(statuses["outputs-target"], "unchanged", "{}", again.dump());
    again.assert_stdout_contains(
        "all 3 parameters already hold these values in the deployment account: nothing written",
    );
    assert_eq!(again.finished("outputs")["outputs"]["WRITTEN"], "0");
    assert_eq!(parameters(&moto, None, "/DataLake/Prod")["/DataLake/Prod/queue_url"][1], 1);

    // Read back as a consumer would: the values, as outputs.
    let read_text = r#"Pipeline(name: "consumer", steps: [
        Step(id: "read", kind: ParameterStore(prefix: "/DataLake/Prod/", read: ["queue_url", "environment"])),
        Step(id: "use", needs: ["read"], kind: Shell(commands: ["echo \"queue $queue_url in $environment\""])),
    ])"#;
    let consumer = moto.env(Test::new().pipeline(read_text));
    let read = consumer.run_with(&["run", "pipeline.ron", "--output", "json"]);
    read.assert_success().assert_stdout_contains(&format!("queue {url} in Prod"));
    assert_eq!(read.finished("read")["outputs"]["queue_url"], url.as_str());
    let missing_text = read_text.replace("\"environment\"]", "\"environment\", \"vpc_id\"]");
    let missing = moto.env(Test::new().pipeline(&missing_text)).run_with(&["run", "pipeline.ron"]);
    missing.assert_code(1).assert_output_contains(
        "this parameter is not in the Parameter Store of the deployment account: /DataLake/Prod/vpc_id",
    );

    // One value changed by hand: only that one is written back.
    seed(&moto, None, &[("/DataLake/Prod/environment", "Tampered", "String")]);
    let third = t.run_with(&["run", "pipeline.ron", "--output", "json"]);
    third.assert_success();
    assert_eq!(third.finished("outputs")["outputs"]["WRITTEN"], "1", "{}", third.dump());
    third.assert_stdout_contains("wrote /DataLake/Prod/environment = Prod (was Tampered)");
}

#[test]
fn a_parameter_name_parameter_store_would_refuse_is_reported_at_its_key() {
    let text = r#"Pipeline(
    name: "bad",
    steps: [
        Step(id: "outputs", kind: ParameterStore(prefix: "DataLake/", parameters: {"vpc id": "x", "empty": ""})),
    ],
)
"#;
    let out = Test::new().pipeline(text).run_with(&["validate", "pipeline.ron"]);
    out.assert_code(2);
    out.assert_stderr_contains("`vpc id`: parameter names use only letters, digits and `_.-/`");
    out.assert_stderr_contains("the value of `empty` is empty: Parameter Store refuses empty values");
    let (line, column) = position(text, "\"\"");
    assert_diagnostic(&out, text, line, column);
}
