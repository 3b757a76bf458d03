//! The Deploy step against a real AWS emulator (moto): pipelines of listed stacks (`tests/fixtures/listed`: three
//! stacks, one importing another's export, in three accounts), pointed at the emulator by `AWS_ENDPOINT_URL` and at
//! a working copy of their repository by `--source-dir`.

mod common;
mod emulator;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{repo_root, Output, Test};
use emulator::Moto;

const PROD: &str = "333333333333";

/// The fixture's pipelines and templates, as their repository holds them (`pipelines/`, `pipelines/templates/`).
fn fixture() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/listed")
}

/// A working copy of the fixture's repository.
fn working_copy() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("runner-infra-").tempdir().unwrap();
    common::copy_dir(&fixture().join("pipelines"), &dir.path().join("pipelines"));
    dir
}

/// `runner run pipelines/<env>.ron --source-dir <copy> --output json` against the emulator.
fn run_pipeline(moto: &Moto, env: &str, copy: &Path) -> Output {
    run_pipeline_with(moto, env, copy, &[])
}

fn run_pipeline_with(moto: &Moto, env: &str, copy: &Path, extra: &[&str]) -> Output {
    let pipeline = fixture().join(format!("pipelines/{env}.ron"));
    moto.env(Test::new())
        .args(&["run", pipeline.to_str().unwrap(), "--source-dir", copy.to_str().unwrap(), "--output", "json"])
        .args(extra)
        .run()
}

fn outputs_of(out: &Output, node: &str) -> serde_json::Value {
    out.json_lines()
        .into_iter()
        .find(|e| e["event"] == "node_finished" && e["node"] == node)
        .map(|e| e["outputs"].clone())
        .unwrap_or_else(|| panic!("no node_finished for {node}:\n{}", out.dump()))
}

#[test]
fn prod_pipeline_deploys_the_data_lake_into_the_prod_account() {
    let moto = Moto::start();
    let copy = working_copy();
    let out = run_pipeline(&moto, "prod", copy.path());
    out.assert_code(0);
    let s = out.statuses();
    for node in [
        "source",
        "synth",
        "deploy-prod/DataLakeVpc",
        "deploy-prod/DataLakeS3",
        "deploy-prod/DataLakeDynamoDb",
        "smoke-test",
    ] {
        assert_eq!(s.get(node).map(String::as_str), Some("succeeded"), "{node}:\n{}", out.dump());
    }

    let state = moto.boto(
        Some(PROD),
        r#"
cfn = client("cloudformation")
stacks = {s["StackName"]: s for s in cfn.describe_stacks()["Stacks"]}
result["stacks"] = sorted(stacks)
result["statuses"] = sorted({s["StackStatus"] for s in stacks.values()})
outputs = {s["StackName"]: {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])} for s in stacks.values()}
result["outputs"] = outputs
result["exports"] = {e["Name"]: e["Value"] for e in cfn.list_exports()["Exports"]}
ec2 = client("ec2")
vpc_id = outputs["DataLakeVpc"]["VpcId"]
result["vpc"] = [v["VpcId"] for v in ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]]
result["subnets"] = len(ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"])
endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
result["endpoint_services"] = sorted(e["ServiceName"].split(".")[-1] for e in endpoints)
s3 = client("s3")
result["buckets"] = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
rules = s3.get_bucket_encryption(Bucket=outputs["DataLakeS3"]["RawBucketName"])["ServerSideEncryptionConfiguration"]["Rules"]
result["raw_encryption"] = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
result["key_state"] = client("kms").describe_key(KeyId=outputs["DataLakeS3"]["KmsKeyArn"])["KeyMetadata"]["KeyState"]
ddb = client("dynamodb")
result["tables"] = sorted(ddb.list_tables()["TableNames"])
result["s3_template"] = cfn.get_template(StackName="DataLakeS3")["TemplateBody"]
"#,
    );
    assert_eq!(state["stacks"], serde_json::json!(["DataLakeDynamoDb", "DataLakeS3", "DataLakeVpc"]));
    assert_eq!(state["statuses"], serde_json::json!(["CREATE_COMPLETE"]));
    assert_eq!(state["vpc"].as_array().unwrap().len(), 1);
    assert_eq!(state["subnets"], 2);
    assert_eq!(state["endpoint_services"], serde_json::json!(["dynamodb", "glue", "kms", "s3"]));
    let buckets: Vec<&str> = state["buckets"].as_array().unwrap().iter().map(|b| b.as_str().unwrap()).collect();
    for zone in ["raw", "conformed", "purpose-built", "access-logs"] {
        assert!(buckets.iter().any(|b| b.starts_with(&format!("prod-datalake-{zone}-{PROD}"))), "{zone}: {buckets:?}");
    }
    assert_eq!(state["raw_encryption"], "aws:kms");
    assert_eq!(state["key_state"], "Enabled");
    assert_eq!(state["tables"], serde_json::json!(["prod-datalake-etl-job-audit", "prod-datalake-etl-job-config"]));
    let template = state["s3_template"].to_string();
    assert!(template.contains("LifecycleConfiguration") && template.contains("ExpirationInDays"), "{template}");

    // The S3 stack's imported endpoint id is the VPC stack's export, and it reached the smoke test.
    let export = state["exports"]["prod-datalake-s3-endpoint-id"].as_str().expect("the VPC stack exports its endpoint");
    assert!(export.starts_with("vpce-"));
    assert_eq!(state["outputs"]["DataLakeS3"]["S3EndpointId"], export);
    assert_eq!(outputs_of(&out, "smoke-test")["VERIFIED_ENDPOINT"], export);
    assert_eq!(outputs_of(&out, "deploy-prod/DataLakeVpc")["S3EndpointId"], export);

    // Nothing landed in the deployment account.
    let home = moto.boto(
        None,
        r#"result["stacks"] = [s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"]]"#,
    );
    assert_eq!(home["stacks"], serde_json::json!([]));
}

#[test]
fn a_second_run_with_nothing_changed_skips_every_stack_without_a_change_set() {
    let moto = Moto::start();
    let copy = working_copy();
    run_pipeline(&moto, "prod", copy.path()).assert_code(0);
    let before = moto.boto(Some(PROD), r#"result["changed"] = sorted(str(s.get("LastUpdatedTime")) for s in client("cloudformation").describe_stacks()["Stacks"])"#);

    // The deployed template and parameters match: up to date, no change set round trip.
    let out = run_pipeline(&moto, "prod", copy.path());
    out.assert_code(0);
    let s = out.statuses();
    for stack in ["DataLakeVpc", "DataLakeS3", "DataLakeDynamoDb"] {
        assert_eq!(s[&format!("deploy-prod/{stack}")], "up_to_date", "{}", out.dump());
    }
    assert_eq!(out.stdout.matches("nothing to do (no change set)").count(), 3, "{}", out.dump());
    assert!(!out.stdout.contains("the change set was empty"), "no change set was made");

    // Forced, the stacks go through change sets, which come back empty: unchanged.
    let out = run_pipeline_with(&moto, "prod", copy.path(), &["--force"]);
    out.assert_code(0);
    let s = out.statuses();
    for stack in ["DataLakeVpc", "DataLakeS3", "DataLakeDynamoDb"] {
        assert_eq!(s[&format!("deploy-prod/{stack}")], "unchanged", "{}", out.dump());
    }
    let after = moto.boto(
        Some(PROD),
        r#"
cfn = client("cloudformation")
stacks = cfn.describe_stacks()["Stacks"]
result["changed"] = sorted(str(s.get("LastUpdatedTime")) for s in stacks)
result["statuses"] = sorted({s["StackStatus"] for s in stacks})
result["change_sets"] = sum(len(cfn.list_change_sets(StackName=s["StackName"])["Summaries"]) for s in stacks)
"#,
    );
    assert_eq!(before["changed"], after["changed"], "a change set was executed");
    assert_eq!(after["statuses"], serde_json::json!(["CREATE_COMPLETE"]));
    assert_eq!(after["change_sets"], 0, "empty change sets are deleted");
    // Outputs still flow although nothing was deployed.
    assert!(outputs_of(&out, "smoke-test")["VERIFIED_ENDPOINT"].as_str().unwrap().starts_with("vpce-"));
}

#[test]
fn a_changed_template_updates_only_its_stack() {
    let moto = Moto::start();
    let copy = working_copy();
    run_pipeline(&moto, "prod", copy.path()).assert_code(0);
    let s3 = copy.path().join("pipelines/templates/s3.yaml");
    let text = std::fs::read_to_string(&s3).unwrap();
    assert!(text.contains("ExpirationInDays: 365"));
    std::fs::write(&s3, text.replacen("ExpirationInDays: 365", "ExpirationInDays: 400", 1)).unwrap();

    let out = run_pipeline(&moto, "prod", copy.path());
    out.assert_code(0);
    let s = out.statuses();
    assert_eq!(s["deploy-prod/DataLakeS3"], "succeeded", "{}", out.dump());
    assert_eq!(s["deploy-prod/DataLakeVpc"], "up_to_date");
    assert_eq!(s["deploy-prod/DataLakeDynamoDb"], "up_to_date");
    let state = moto.boto(
        Some(PROD),
        r#"
cfn = client("cloudformation")
result["template"] = cfn.get_template(StackName="DataLakeS3")["TemplateBody"]
result["status"] = cfn.describe_stacks(StackName="DataLakeS3")["Stacks"][0]["StackStatus"]
"#,
    );
    assert!(state["template"].to_string().contains("ExpirationInDays: 400"));
    assert_eq!(state["status"], "UPDATE_COMPLETE");
}

#[test]
fn a_stack_the_emulator_rejects_fails_and_skips_only_what_depends_on_it() {
    let moto = Moto::start();
    let copy = working_copy();
    let vpc = copy.path().join("pipelines/templates/vpc.yaml");
    let text = std::fs::read_to_string(&vpc).unwrap();
    assert!(text.contains("CidrBlock: !Ref VpcCidr"));
    std::fs::write(&vpc, text.replacen("CidrBlock: !Ref VpcCidr", "CidrBlock: !Ref NoSuchParameter", 1)).unwrap();

    let out = run_pipeline(&moto, "prod", copy.path());
    out.assert_code(1);
    let s = out.statuses();
    assert_eq!(s["deploy-prod/DataLakeVpc"], "failed");
    assert_eq!(s["deploy-prod/DataLakeS3"], "skipped");
    assert_eq!(s["smoke-test"], "skipped");
    assert_eq!(s["deploy-prod/DataLakeDynamoDb"], "succeeded");
    let error = out
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "node_finished" && e["node"] == "deploy-prod/DataLakeVpc")
        .map(|e| e["error"].as_str().unwrap_or_default().to_string())
        .unwrap();
    assert!(error.contains("CreateStack for stack DataLakeVpc failed"), "{error}");
    assert!(error.contains("HTTP 500") && error.contains("Internal Server Error"), "the emulator's answer: {error}");
    // The S3 stack was never attempted (the emulator cannot list the broken VPC stack, so look at the buckets).
    let state =
        moto.boto(Some(PROD), r#"result["buckets"] = [b["Name"] for b in client("s3").list_buckets()["Buckets"]]"#);
    assert_eq!(state["buckets"], serde_json::json!([]), "nothing of the S3 stack exists");
}

#[test]
fn an_unreachable_endpoint_fails_within_seconds_and_deploys_nothing() {
    let copy = working_copy();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pipeline = fixture().join("pipelines/prod.ron");
    let started = Instant::now();
    let test = Test::new()
        .args(&["run", pipeline.to_str().unwrap(), "--source-dir", copy.path().to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &format!("http://localhost:{closed}"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_MAX_ATTEMPTS", "1");
    let out = test.run();
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    out.assert_code(1);
    out.assert_stderr_contains("cannot assume role arn:aws:iam::333333333333:role/cdk-hnb659fds-deploy-role-333333333333-us-east-1 in account 333333333333");
    out.assert_stderr_contains(&format!(
        "the AWS endpoint cannot be reached at http://localhost:{closed} (AWS_ENDPOINT_URL)"
    ));
    out.assert_stderr_contains("nothing ran");
    assert!(!copy.path().join("build").exists(), "no step ran");
}

#[test]
fn missing_credentials_are_named_and_nothing_is_deployed() {
    let moto = Moto::start();
    let copy = working_copy();
    let pipeline = fixture().join("pipelines/prod.ron");
    let out = moto
        .env_without_credentials(Test::new())
        .args(&["run", pipeline.to_str().unwrap(), "--source-dir", copy.path().to_str().unwrap()])
        .run();
    out.assert_code(1);
    out.assert_stderr_contains("no AWS credentials found");
    let state = moto.boto(
        Some(PROD),
        r#"result["stacks"] = [s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"]]"#,
    );
    assert_eq!(state["stacks"], serde_json::json!([]));
}

#[test]
fn dev_test_and_prod_each_deploy_into_their_own_account() {
    let moto = Moto::start();
    let copy = working_copy();
    for env in ["dev", "test", "prod"] {
        run_pipeline(&moto, env, copy.path()).assert_code(0);
    }
    for (env, account) in [("dev", "111111111111"), ("test", "222222222222"), ("prod", PROD)] {
        let state = moto.boto(
            Some(account),
            r#"
cfn = client("cloudformation")
result["stacks"] = sorted(s["StackName"] for s in cfn.describe_stacks()["Stacks"])
result["exports"] = sorted(e["Name"] for e in cfn.list_exports()["Exports"])
"#,
        );
        assert_eq!(state["stacks"], serde_json::json!(["DataLakeDynamoDb", "DataLakeS3", "DataLakeVpc"]), "{env}");
        let exports: Vec<&str> = state["exports"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert!(exports.contains(&format!("{env}-datalake-s3-endpoint-id").as_str()), "{env}: {exports:?}");
        assert!(exports.iter().all(|e| e.starts_with(&format!("{env}-"))), "{env} sees only its exports: {exports:?}");
    }
}

#[test]
fn a_template_over_the_body_limit_goes_through_the_assets_bucket() {
    let moto = Moto::start();
    let big_description = "x".repeat(60_000);
    let template = format!(
        "AWSTemplateFormatVersion: '2010-09-09'\nMetadata:\n  Padding: {big_description}\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\nOutputs:\n  QueueName:\n    Value: !GetAtt Queue.QueueName\n"
    );
    moto.boto(
        Some("111111111111"),
        r#"client("s3").create_bucket(Bucket="cdk-hnb659fds-assets-111111111111-us-east-1")"#,
    );
    let test = moto
        .env(Test::new())
        .write("big.yaml", &template)
        .pipeline(
            r#"Pipeline(name: "big", steps: [
    Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "Big", template: "big.yaml"),
    ]))),
])"#,
        )
        .args(&["run", "pipeline.ron", "--output", "json"]);
    let out = test.run();
    out.assert_code(0);
    assert!(out.combined().contains("over the 51200-byte limit"), "{}", out.dump());
    let state = moto.boto(
        Some("111111111111"),
        r#"
objs = client("s3").list_objects_v2(Bucket="cdk-hnb659fds-assets-111111111111-us-east-1").get("Contents", [])
result["keys"] = [o["Key"] for o in objs]
result["status"] = client("cloudformation").describe_stacks(StackName="Big")["Stacks"][0]["StackStatus"]
"#,
    );
    assert_eq!(state["status"], "CREATE_COMPLETE");
    let keys = state["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].as_str().unwrap().starts_with("runner/templates/"));
}

#[test]
fn plan_diff_previews_change_sets_and_leaves_nothing_behind() {
    let moto = Moto::start();
    let copy = working_copy();
    let pipeline = fixture().join("pipelines/prod.ron");
    let plan_diff = || {
        moto.env(Test::new())
            .args(&["plan", pipeline.to_str().unwrap(), "--source-dir", copy.path().to_str().unwrap(), "--diff"])
            .run()
    };
    // Before any deploy: the templates the synth step would build, previewed as new stacks.
    let build = copy.path().join("build");
    std::fs::create_dir_all(&build).unwrap();
    for t in ["vpc", "s3", "dynamodb"] {
        std::fs::copy(copy.path().join(format!("pipelines/templates/{t}.yaml")), build.join(format!("{t}.yaml")))
            .unwrap();
    }
    let out = plan_diff();
    out.assert_code(0);
    out.assert_stdout_contains(
        "deploy-prod/DataLakeDynamoDb (aws://333333333333/us-east-1): new stack, 2 resources to add",
    );
    out.assert_stdout_contains("+ Add    EtlJobAuditTable (AWS::DynamoDB::Table)");
    let state = moto.boto(
        Some(PROD),
        r#"result["stacks"] = [s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"]]"#,
    );
    assert_eq!(state["stacks"], serde_json::json!([]), "previews of new stacks leave no stack behind");

    run_pipeline(&moto, "prod", copy.path()).assert_code(0);
    let s3 = build.join("s3.yaml");
    let text = std::fs::read_to_string(&s3).unwrap();
    std::fs::write(&s3, text.replacen("ExpirationInDays: 365", "ExpirationInDays: 500", 1)).unwrap();
    let out = plan_diff();
    out.assert_code(0);
    out.assert_stdout_contains("deploy-prod/DataLakeVpc (aws://333333333333/us-east-1): no changes");
    out.assert_stdout_contains("deploy-prod/DataLakeS3 (aws://333333333333/us-east-1): 1 changes");
    out.assert_stdout_contains("~ Modify");
    let state = moto.boto(
        Some(PROD),
        r#"
cfn = client("cloudformation")
result["template"] = cfn.get_template(StackName="DataLakeS3")["TemplateBody"]
result["change_sets"] = sum(len(cfn.list_change_sets(StackName=n)["Summaries"]) for n in ["DataLakeVpc", "DataLakeS3", "DataLakeDynamoDb"])
"#,
    );
    assert!(state["template"].to_string().contains("ExpirationInDays: 365"), "nothing executed");
    assert_eq!(state["change_sets"], 0);
}

/// A pipeline of its own: `pipeline.ron` and the files it names, run against the emulator with JSON events.
fn own_pipeline(moto: &Moto, pipeline: &str, files: &[(&str, &str)]) -> Test {
    let mut test = moto.env(Test::new()).pipeline(pipeline);
    for (path, text) in files {
        test = test.write(path, text);
    }
    test.args(&["run", "pipeline.ron", "--output", "json"])
}

const TWO_QUEUES: &str = "Resources:\n  First:\n    Type: AWS::SQS::Queue\n  Second:\n    Type: AWS::SQS::Queue\n";

/// The last `progress` event of a node: (done, total, message).
fn last_progress(out: &Output, node: &str) -> (u64, u64, String) {
    let e = out
        .json_lines()
        .into_iter()
        .rfind(|e| e["event"] == "progress" && e["node"] == node)
        .unwrap_or_else(|| panic!("no progress of {node}:\n{}", out.dump()));
    (e["done"].as_u64().unwrap(), e["total"].as_u64().unwrap(), e["message"].as_str().unwrap().to_string())
}

#[test]
fn the_resource_count_moves_to_every_resource_of_the_stack_on_create_and_update() {
    let moto = Moto::start();
    let pipeline = r#"Pipeline(name: "queues", steps: [
    Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "Queues", template: "queues.yaml"),
    ]))),
])"#;
    let test = own_pipeline(&moto, pipeline, &[("queues.yaml", TWO_QUEUES)]);
    let out = test.run();
    out.assert_code(0);
    assert_eq!(last_progress(&out, "deploy/Queues"), (2, 2, "deploying".to_string()), "{}", out.dump());

    // An update through a change set counts the stack's resources too: three after a queue is added.
    std::fs::write(test.path().join("queues.yaml"), format!("{TWO_QUEUES}  Third:\n    Type: AWS::SQS::Queue\n"))
        .unwrap();
    let out = test.run();
    out.assert_code(0);
    assert_eq!(out.statuses()["deploy/Queues"], "succeeded", "{}", out.dump());
    assert_eq!(last_progress(&out, "deploy/Queues"), (3, 3, "deploying".to_string()), "{}", out.dump());
}

/// One rule for ARNs and host names, from the region's partition: a Deploy and a Publish in China (aws-cn) and a
/// Deploy in GovCloud (aws-us-gov) assume the bootstrap roles of their own partition (moto lets any ARN be
/// assumed, so what was asked is read from its state).
#[test]
fn stages_in_china_and_govcloud_assume_the_bootstrap_roles_of_their_partition() {
    let moto = Moto::start();
    moto.boto_in(
        Some("111111111111"),
        "cn-north-1",
        r#"client("s3").create_bucket(Bucket="cdk-hnb659fds-assets-111111111111-cn-north-1", CreateBucketConfiguration={"LocationConstraint": "cn-north-1"})"#,
    );
    let pipeline = r#"Pipeline(name: "partitions", steps: [
    Step(id: "publish-cn", kind: Publish(assets: Files(
        destination: (account: "111111111111", region: "cn-north-1"),
        files: [(id: "notes", path: "notes.txt")],
    ))),
    Step(id: "deploy-cn", needs: ["publish-cn"], kind: Deploy(account: "111111111111", region: "cn-north-1", stacks: Listed([
        (name: "Queues", template: "queues.yaml"),
    ]))),
    Step(id: "deploy-gov", kind: Deploy(account: "222222222222", region: "us-gov-west-1", stacks: Listed([
        (name: "Queues", template: "queues.yaml"),
    ]))),
])"#;
    let plan = Test::new().pipeline(pipeline).args(&["plan", "pipeline.ron", "--full"]).run();
    plan.assert_code(0);
    plan.assert_stdout_contains(
        "as role arn:aws-cn:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-cn-north-1",
    );
    plan.assert_stdout_contains(
        "as role arn:aws-us-gov:iam::222222222222:role/cdk-hnb659fds-deploy-role-222222222222-us-gov-west-1",
    );

    let out = own_pipeline(&moto, pipeline, &[("queues.yaml", TWO_QUEUES), ("notes.txt", "notes\n")]).run();
    out.assert_code(0);
    assert_eq!(
        moto.assumed_roles(),
        [
            "arn:aws-cn:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-cn-north-1",
            "arn:aws-cn:iam::111111111111:role/cdk-hnb659fds-file-publishing-role-111111111111-cn-north-1",
            "arn:aws-us-gov:iam::222222222222:role/cdk-hnb659fds-deploy-role-222222222222-us-gov-west-1",
        ],
        "{}",
        out.dump()
    );
    for (account, region) in [("111111111111", "cn-north-1"), ("222222222222", "us-gov-west-1")] {
        let state = moto.boto_in(
            Some(account),
            region,
            r#"result["stack"] = client("cloudformation").describe_stacks(StackName="Queues")["Stacks"][0]["StackId"]"#,
        );
        let partition = if region.starts_with("cn-") { "aws-cn" } else { "aws-us-gov" };
        let want = format!("arn:{partition}:cloudformation:{region}:{account}:stack/Queues/");
        assert!(state["stack"].as_str().unwrap().starts_with(&want), "{state}");
    }
}

const ENV_TEMPLATE: &str =
    "Parameters:\n  Env:\n    Type: String\n    Default: dev\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n";

/// One stack `Env` with a `Env` parameter; `fields` go into the stack, `deploy` into the Deploy.
fn env_pipeline(deploy: &str, fields: &str) -> String {
    format!(
        r#"Pipeline(name: "params", steps: [
    Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", {deploy} stacks: Listed([
        (name: "Env", template: "env.yaml", {fields}),
    ]))),
])"#
    )
}

/// The deployed stack `Env`: parameters, tags, termination protection, notification ARNs.
fn env_stack(moto: &Moto) -> serde_json::Value {
    moto.boto(
        Some("111111111111"),
        r#"
s = client("cloudformation").describe_stacks(StackName="Env")["Stacks"][0]
result["parameters"] = {p["ParameterKey"]: p["ParameterValue"] for p in s.get("Parameters", [])}
result["tags"] = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
result["protected"] = s.get("EnableTerminationProtection")
result["topics"] = s.get("NotificationARNs", [])
result["status"] = s["StackStatus"]
"#,
    )
}

/// `${...}`-free rewrite of the pipeline and template of a test, then a run.
fn rerun(test: &Test, pipeline: &str, template: &str) -> Output {
    std::fs::write(test.path().join("pipeline.ron"), pipeline).unwrap();
    std::fs::write(test.path().join("env.yaml"), template).unwrap();
    test.run()
}

#[test]
fn a_parameter_no_longer_given_keeps_its_deployed_value_whatever_else_changed() {
    let moto = Moto::start();
    let test =
        own_pipeline(&moto, &env_pipeline("", r#"parameters: {"Env": "staging"}"#), &[("env.yaml", ENV_TEMPLATE)]);
    test.run().assert_code(0);
    assert_eq!(env_stack(&moto)["parameters"]["Env"], "staging");

    // No longer given, nothing else changed: nothing to do, and `staging` stays.
    let out = rerun(&test, &env_pipeline("", ""), ENV_TEMPLATE);
    out.assert_code(0);
    assert_eq!(out.statuses()["deploy/Env"], "up_to_date", "{}", out.dump());
    // An unrelated template change: deployed through a change set, and `Env` still keeps its value.
    let out = rerun(&test, &env_pipeline("", ""), &format!("{ENV_TEMPLATE}  Other:\n    Type: AWS::SQS::Queue\n"));
    out.assert_code(0);
    assert_eq!(out.statuses()["deploy/Env"], "succeeded", "{}", out.dump());
    out.assert_stdout_contains("parameter Env keeps its deployed value (staging): not given");
    assert_eq!(env_stack(&moto)["parameters"]["Env"], "staging", "{}", out.dump());
}

#[test]
fn without_previous_parameters_a_parameter_no_longer_given_takes_its_default_at_once() {
    let moto = Moto::start();
    let deploy = "previous_parameters: false,";
    let test =
        own_pipeline(&moto, &env_pipeline(deploy, r#"parameters: {"Env": "staging"}"#), &[("env.yaml", ENV_TEMPLATE)]);
    test.run().assert_code(0);
    // No longer given, the template unchanged: the Default differs from what is deployed, so the stack is not up
    // to date but goes through a change set now, not on the next unrelated change. (moto does not apply a change
    // set's parameters; what is sent is checked against the AWS double in deploy_aws_behaviours.rs.)
    let out = rerun(&test, &env_pipeline(deploy, ""), ENV_TEMPLATE);
    out.assert_code(0);
    assert_ne!(out.statuses()["deploy/Env"], "up_to_date", "{}", out.dump());
    out.assert_stdout_contains("~ Parameter Env: staging -> dev (its Default)");
    out.assert_stdout_contains("executing change set runner-");
}

#[test]
fn tags_removed_and_topics_are_compared_with_the_deployed_stack() {
    let moto = Moto::start();
    let topic =
        moto.boto(Some("111111111111"), r#"result["arn"] = client("sns").create_topic(Name="events")["TopicArn"]"#);
    let topic = topic["arn"].as_str().unwrap().to_string();
    let direct = "method: Direct,";
    let fields = format!(r#"tags: {{"team": "data", "cost": "7"}}, notification_arns: ["{topic}"]"#);
    let test = own_pipeline(&moto, &env_pipeline(direct, &fields), &[("env.yaml", ENV_TEMPLATE)]);
    test.run().assert_code(0);
    assert_eq!(env_stack(&moto)["topics"], serde_json::json!([topic]));
    // The same topics and tags again: up to date.
    let out = test.run();
    out.assert_code(0);
    assert_eq!(out.statuses()["deploy/Env"], "up_to_date", "{}", out.dump());

    // A tag removed: not up to date (moto then answers "No updates are to be performed": it updates no stack
    // for tags alone, as AWS does).
    let fields = format!(r#"tags: {{"team": "data"}}, notification_arns: ["{topic}"]"#);
    let out = rerun(&test, &env_pipeline(direct, &fields), ENV_TEMPLATE);
    out.assert_code(0);
    assert_ne!(out.statuses()["deploy/Env"], "up_to_date", "{}", out.dump());
    out.assert_stdout_contains("stack Env differs from this request: - Tag cost");

    // Topics alone: an update. (Capabilities and termination protection are compared too, see the unit tests:
    // moto reports no capabilities and answers UpdateTerminationProtection with HTTP 500.)
    let out = rerun(&test, &env_pipeline(direct, r#"tags: {"team": "data"}, notification_arns: []"#), ENV_TEMPLATE);
    out.assert_code(0);
    assert_ne!(out.statuses()["deploy/Env"], "up_to_date", "{}", out.dump());
    out.assert_stdout_contains(&format!("~ Notification ARNs: {topic} -> none"));
}

#[test]
fn plan_diff_shows_outputs_tags_and_parameters_that_change_no_resource() {
    let moto = Moto::start();
    let test = own_pipeline(
        &moto,
        &env_pipeline("", r#"parameters: {"Env": "staging"}, tags: {"team": "data"}"#),
        &[("env.yaml", ENV_TEMPLATE)],
    );
    test.run().assert_code(0);
    let plan_diff = || test.run_with(&["plan", "pipeline.ron", "--diff"]);
    let out = plan_diff();
    out.assert_code(0);
    out.assert_stdout_contains("deploy/Env (aws://111111111111/us-east-1): no changes");

    std::fs::write(
        test.path().join("pipeline.ron"),
        env_pipeline("", r#"parameters: {"Env": "prod"}, tags: {"team": "platform", "cost": "7"}"#),
    )
    .unwrap();
    std::fs::write(
        test.path().join("env.yaml"),
        format!("{ENV_TEMPLATE}Outputs:\n  QueueUrl:\n    Value: !Ref Queue\n"),
    )
    .unwrap();
    let out = plan_diff();
    out.assert_code(0);
    for line in
        ["+ Output QueueUrl", "~ Parameter Env: staging -> prod", "~ Tag team: data -> platform", "+ Tag cost=7"]
    {
        out.assert_stdout_contains(line);
    }
    let stack = env_stack(&moto);
    assert_eq!(stack["parameters"]["Env"], "staging", "nothing executed");
}

#[test]
fn change_sets_left_by_an_earlier_run_are_removed_and_others_kept() {
    let moto = Moto::start();
    let test = own_pipeline(&moto, &env_pipeline("", ""), &[("env.yaml", ENV_TEMPLATE)]);
    test.run().assert_code(0);
    // What a run stopped between CreateChangeSet and ExecuteChangeSet (SIGKILL) leaves, a `plan --diff` stopped
    // an hour ago, a preview in flight right now, and someone else's change set.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let names = [
        format!("runner-{}-1", now_ms - 60_000),
        format!("runner-diff-{}", now_ms - 3_600_000),
        format!("runner-diff-{now_ms}"),
        "release-candidate".to_string(),
    ];
    let script = format!(
        r#"
cfn = client("cloudformation")
body = cfn.get_template(StackName="Env")["TemplateBody"] + "  Extra:\n    Type: AWS::SQS::Queue\n"
for name in {names:?}:
    cfn.create_change_set(StackName="Env", ChangeSetName=name, TemplateBody=body, ChangeSetType="UPDATE")
result["names"] = sorted(c["ChangeSetName"] for c in cfn.list_change_sets(StackName="Env")["Summaries"])
"#
    );
    assert_eq!(moto.boto(Some("111111111111"), &script)["names"].as_array().unwrap().len(), 4);
    let out = test.run();
    out.assert_code(0);
    assert_eq!(out.statuses()["deploy/Env"], "up_to_date", "{}", out.dump());
    out.assert_stdout_contains(&format!("deleted change set {}", names[0]));
    let left = moto.boto(
        Some("111111111111"),
        r#"result["names"] = sorted(c["ChangeSetName"] for c in client("cloudformation").list_change_sets(StackName="Env")["Summaries"])"#,
    );
    let mut kept = vec![names[2].clone(), names[3].clone()];
    kept.sort();
    assert_eq!(left["names"], serde_json::json!(kept), "{}", out.dump());
}

#[test]
fn a_stack_name_from_the_environment_is_substituted_when_planning_and_deploys() {
    let moto = Moto::start();
    let pipeline = r#"Pipeline(name: "branches", steps: [
    Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "Base-${env:BRANCH_SLUG}", template: "queues.yaml"),
        (name: "App-${env:BRANCH_SLUG}", template: "queues.yaml", depends_on: ["Base-${env:BRANCH_SLUG}"]),
    ]))),
])"#;
    let test = own_pipeline(&moto, pipeline, &[("queues.yaml", TWO_QUEUES)]).env("BRANCH_SLUG", "feature-x");
    let plan = test.run_with(&["plan", "pipeline.ron"]);
    plan.assert_code(0);
    plan.assert_stdout_contains("deploy/Base-feature-x");
    plan.assert_stdout_contains("deploy/App-feature-x");
    let out = test.run();
    out.assert_code(0);
    assert_eq!(out.statuses()["deploy/Base-feature-x"], "succeeded", "{}", out.dump());
    assert_eq!(out.statuses()["deploy/App-feature-x"], "succeeded", "{}", out.dump());
    let state = moto.boto(
        Some("111111111111"),
        r#"result["stacks"] = sorted(s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"])"#,
    );
    assert_eq!(state["stacks"], serde_json::json!(["App-feature-x", "Base-feature-x"]));

    // A value CloudFormation would refuse is an error when planning, the value shown; so is an unset variable.
    let bad = own_pipeline(&moto, pipeline, &[("queues.yaml", TWO_QUEUES)]).env("BRANCH_SLUG", "feature/x");
    let plan = bad.run_with(&["plan", "pipeline.ron"]);
    plan.assert_code(2);
    plan.assert_stderr_contains(
        "stack name `Base-feature/x` (from `Base-${env:BRANCH_SLUG}`) is not one CloudFormation accepts",
    );
    let unset = own_pipeline(&moto, pipeline, &[("queues.yaml", TWO_QUEUES)]).env_remove("BRANCH_SLUG");
    let plan = unset.run_with(&["plan", "pipeline.ron"]);
    plan.assert_code(2);
    plan.assert_stderr_contains("stack name `Base-${env:BRANCH_SLUG}`: environment variable `BRANCH_SLUG` is not set");
    // A step output cannot name a stack: it is known only when the step runs.
    let outputs = Test::new()
        .pipeline(&pipeline.replace("${env:BRANCH_SLUG}", "${steps.build.outputs.SLUG}").replace(
            r#"Step(id: "deploy", kind"#,
            r#"Step(id: "build", kind: Shell(commands: ["true"])),
    Step(id: "deploy", needs: ["build"], kind"#,
        ))
        .args(&["validate", "pipeline.ron"])
        .run();
    outputs.assert_code(2);
    outputs.assert_stderr_contains("uses a step output: a stack name is its node's id, known when planning");
}

/// The stacks in account 111111111111 of the emulator, by name.
fn stacks_in_111(moto: &Moto) -> Vec<String> {
    let state = moto.boto(
        Some("111111111111"),
        r#"result["stacks"] = sorted(s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"])"#,
    );
    state["stacks"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// `needle` is in what the run printed (stderr, or the JSON events on stdout).
fn said(out: &Output, needle: &str) {
    assert!(out.stderr.contains(needle) || out.stdout.contains(needle), "no `{needle}` in:\n{}", out.dump());
}

const NEEDS_ENV: &str = "Parameters:\n  Env:\n    Type: String\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n";

/// Issue 12.3: the templates there when the run starts are all read before anything deploys, with the parameter
/// checks CloudFormation would make: a later stage's bad template stops the run before the first stage goes out.
#[test]
fn a_bad_template_of_a_later_stage_stops_the_run_before_anything_deploys() {
    let moto = Moto::start();
    let pipeline = r#"Pipeline(name: "stages", steps: [
    Step(id: "first", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "First", template: "queues.yaml"),
    ]))),
    Step(id: "second", needs: ["first"], kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "Broken", template: "broken.yaml"),
        (name: "Misspelt", template: "env.yaml", parameters: {"Evn": "prod"}),
        (name: "Unset", template: "env.yaml"),
    ]))),
])"#;
    let files = [("queues.yaml", TWO_QUEUES), ("broken.yaml", "Resources:\n  Q: [unclosed\n"), ("env.yaml", NEEDS_ENV)];
    let out = own_pipeline(&moto, pipeline, &files).run();
    out.assert_code(2);
    said(&out, "stage second not deployed: 4 problems found in its templates before any of its stacks");
    said(&out, "stack Broken: template");
    said(&out, "parameter `Evn` is given, but template env.yaml does not declare it");
    said(&out, "(did you mean `Env`?)");
    said(
        &out,
        "stack Unset: parameter `Env` of template env.yaml has no Default and no value given, and the stack is new",
    );
    assert!(out.statuses().is_empty(), "no node ran:\n{}", out.dump());
    assert_eq!(stacks_in_111(&moto), Vec::<String>::new(), "nothing deployed");
}

/// Issue 12.3: templates an upstream step makes (a synth) are checked for the whole stage before its first stack:
/// one bad template and none of the stage's independent stacks is deployed.
#[test]
fn a_stage_whose_templates_are_made_upstream_is_checked_whole_before_its_first_stack() {
    let moto = Moto::start();
    let pipeline = r#"Pipeline(name: "synthesized", steps: [
    Step(id: "synth", kind: Shell(commands: [
        "mkdir -p out && cp queues.yaml out/a.yaml && cp queues.yaml out/b.yaml && printf 'Resources: [1\n' > out/c.yaml",
    ])),
    Step(id: "deploy", needs: ["synth"], kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "A", template: "out/a.yaml"),
        (name: "B", template: "out/b.yaml"),
        (name: "C", template: "out/c.yaml"),
    ]))),
])"#;
    let test = own_pipeline(&moto, pipeline, &[("queues.yaml", TWO_QUEUES)]);
    let out = test.run();
    assert_ne!(out.code, Some(0), "{}", out.dump());
    let statuses = out.statuses();
    assert_eq!(statuses["synth"], "succeeded", "{}", out.dump());
    for stack in ["deploy/A", "deploy/B", "deploy/C"] {
        assert_eq!(statuses[stack], "failed", "{stack}:\n{}", out.dump());
    }
    said(&out, "stage deploy not deployed: a problem found in its templates before any of its stacks");
    said(&out, "stack C: template");
    said(&out, "its stage's templates were refused (see `deploy/");
    assert_eq!(stacks_in_111(&moto), Vec::<String>::new(), "nothing deployed");

    // Fixed upstream, the stage deploys whole.
    std::fs::write(test.path().join("queues.yaml"), TWO_QUEUES).unwrap();
    let fixed = pipeline.replace(r"printf 'Resources: [1\n' > out/c.yaml", "cp queues.yaml out/c.yaml");
    std::fs::write(test.path().join("pipeline.ron"), fixed).unwrap();
    test.run().assert_code(0);
    assert_eq!(stacks_in_111(&moto), ["A", "B", "C"]);
}
