//! CDK cloud assemblies against a real AWS emulator (moto): the fixture app's `cdk.out` (synthesized by the real
//! CDK, `fixtures/cdk-app`), its Dev stage published and deployed into the Dev account.

mod common;
mod emulator;

use common::{repo_root, Test};
use emulator::{bootstrap_by_hand, Moto};

const DEV: &str = "111111111111";

fn fixture() -> std::path::PathBuf {
    repo_root().join("fixtures/cdk-app/cdk.out")
}

/// (bucket, key) of every file asset the Dev stage's asset manifests name.
fn expected_objects() -> Vec<(String, String)> {
    let dir = fixture().join("assembly-Dev");
    let mut objects = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".assets.json") {
            continue;
        }
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for asset in manifest["files"].as_object().unwrap().values() {
            for d in asset["destinations"].as_object().unwrap().values() {
                objects.push((
                    d["bucketName"].as_str().unwrap().to_string(),
                    d["objectKey"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    objects.sort();
    objects.dedup();
    objects
}

const PIPELINE: &str = r#"Pipeline(name: "cdk", steps: [
    Step(id: "publish-dev", kind: Publish(assets: Assembly(dir: "cdk.out", stage: "Dev"))),
    Step(
        id: "deploy-dev",
        needs: ["publish-dev"],
        kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Assembly(dir: "cdk.out", stage: "Dev")),
    ),
])"#;

fn state_of_dev(moto: &Moto) -> serde_json::Value {
    moto.boto(
        Some(DEV),
        r#"
import json
cfn = client("cloudformation")
stacks = {s["StackName"]: s for s in cfn.describe_stacks()["Stacks"]}
result["stacks"] = {n: s["StackStatus"] for n, s in stacks.items()}
result["updated"] = sorted(str(s.get("LastUpdatedTime")) for s in stacks.values())
result["templates"] = {n: cfn.get_template(StackName=n)["TemplateBody"] for n in stacks}
s3 = client("s3")
result["objects"] = sorted([b["Name"], o["Key"], str(o["LastModified"])] for b in s3.list_buckets()["Buckets"]
    if b["Name"].startswith("cdk-") for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", []))
result["functions"] = [f["FunctionName"] for f in client("lambda").list_functions()["Functions"]]
"#,
    )
}

#[test]
fn publish_and_deploy_of_the_dev_stage_put_its_assets_and_stacks_into_the_dev_account() {
    let moto = Moto::start();
    bootstrap_by_hand(&moto, DEV);
    let test = moto.env(Test::new()).pipeline(PIPELINE).args(&["run", "pipeline.ron", "--output", "json"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    let s = out.statuses();
    for stack in ["Dev-VpcStack", "Dev-S3Stack", "Dev-DynamoDbStack"] {
        assert_eq!(s.get(&format!("deploy-dev/{stack}")).map(String::as_str), Some("succeeded"), "{}", out.dump());
    }
    assert_eq!(s["publish-dev/AuditWriterFunction-Code"], "succeeded", "{}", out.dump());

    let state = state_of_dev(&moto);
    let objects: Vec<(String, String)> = state["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o[0].as_str().unwrap().to_string(), o[1].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(objects, expected_objects(), "objects land at the bucket/key the asset manifests name");
    for (stack, file) in [
        ("Dev-VpcStack", "DevVpcStack3FD4A81C"),
        ("Dev-S3Stack", "DevS3Stack84C0E038"),
        ("Dev-DynamoDbStack", "DevDynamoDbStack5C9B9F71"),
    ] {
        assert_eq!(state["stacks"][stack], "CREATE_COMPLETE", "{state}");
        let want: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture().join(format!("assembly-Dev/{file}.template.json"))).unwrap(),
        )
        .unwrap();
        let got = &state["templates"][stack];
        let got: serde_json::Value =
            if got.is_string() { serde_json::from_str(got.as_str().unwrap()).unwrap() } else { got.clone() };
        assert_eq!(got, want, "{stack} runs the assembly's template");
    }
    assert_eq!(state["functions"].as_array().unwrap().len(), 1, "the Lambda function was made from the zip asset");
    // The S3 stack came after the VPC stack it imports from.
    let order: Vec<String> = out
        .json_lines()
        .into_iter()
        .filter(|e| e["event"] == "node_started")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect();
    let at = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(at("deploy-dev/Dev-VpcStack") < at("deploy-dev/Dev-S3Stack"));

    // Again: nothing to publish, nothing to deploy.
    let again = test.run();
    again.assert_code(0);
    for (node, status) in again.statuses() {
        // Publish: HeadObject found every object. Deploy: the stack already runs this template (GetTemplate,
        // `up_to_date`, no change set) or its change set was empty (`unchanged`).
        let nothing_done = if node.starts_with("deploy-dev/") {
            ["unchanged", "up_to_date"].contains(&status.as_str())
        } else {
            status == "unchanged"
        };
        assert!(nothing_done, "{node} {status}:\n{}", again.dump());
    }
    let after = state_of_dev(&moto);
    assert_eq!(after["objects"], state["objects"]);
    assert_eq!(after["updated"], state["updated"]);
}

#[test]
fn without_cdk_out_at_plan_time_the_stage_expands_at_run_time_after_the_synth() {
    let moto = Moto::start();
    bootstrap_by_hand(&moto, DEV);
    let pipeline = PIPELINE.replace(
        r#"Step(id: "publish-dev", kind"#,
        &format!(
            r#"Step(id: "synth", kind: Shell(commands: ["cp -r '{}' cdk.out"])),
    Step(id: "publish-dev", needs: ["synth"], kind"#,
            fixture().display()
        ),
    );
    let test = moto.env(Test::new()).pipeline(&pipeline);
    let plan = Test::new().pipeline(&pipeline).args(&["plan", "pipeline.ron"]).run();
    plan.assert_code(0);
    plan.assert_stdout_contains("expands at run time");
    let out = test.args(&["run", "pipeline.ron", "--output", "json"]).run();
    out.assert_code(0);
    let added: Vec<String> = out
        .json_lines()
        .into_iter()
        .filter(|e| e["event"] == "nodes_added")
        .flat_map(|e| {
            e["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    for node in [
        "deploy-dev/Dev-VpcStack",
        "deploy-dev/Dev-S3Stack",
        "deploy-dev/Dev-DynamoDbStack",
        "publish-dev/AuditWriterFunction-Code",
    ] {
        assert!(added.iter().any(|a| a == node), "{node} spliced in: {added:?}");
        assert_eq!(out.statuses()[node], "succeeded", "{}", out.dump());
    }
    let state = state_of_dev(&moto);
    assert_eq!(state["stacks"].as_object().unwrap().len(), 3, "{state}");
}

#[test]
fn plan_shows_the_stacks_and_assets_of_an_existing_assembly() {
    let test = Test::new().pipeline(PIPELINE).args(&["plan", "pipeline.ron"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    for node in [
        "publish-dev/AuditWriterFunction-Code",
        "publish-dev/Dev-VpcStack-Template",
        "deploy-dev/Dev-VpcStack",
        "deploy-dev/Dev-S3Stack",
        "deploy-dev/Dev-DynamoDbStack",
    ] {
        out.assert_stdout_contains(node);
    }
    let graph = Test::new().pipeline(PIPELINE).args(&["graph", "pipeline.ron", "--format", "mermaid"]);
    common::copy_dir(&fixture(), &graph.path().join("cdk.out"));
    graph.run().assert_code(0).assert_stdout_contains("Dev-S3Stack");
}

#[test]
fn a_cdk_out_left_by_an_earlier_synth_is_not_planned_from_when_a_synth_runs_first() {
    let pipeline = PIPELINE.replace(
        r#"Step(id: "publish-dev", kind"#,
        r#"Step(id: "synth", kind: Shell(commands: ["npx cdk synth"])),
    Step(id: "publish-dev", needs: ["synth"], kind"#,
    );
    let test = Test::new().pipeline(&pipeline).args(&["plan", "pipeline.ron"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    // The synth will write cdk.out again: its stacks are only known after it.
    out.assert_stdout_contains("expands at run time");
    assert!(!out.stdout.contains("deploy-dev/Dev-VpcStack"), "{}", out.dump());
}

/// A Source ahead of the stage: the assembly comes from its checkout.
const FROM_SOURCE: &str = r#"Pipeline(name: "cdk", steps: [
    Step(id: "source", kind: Source(repository: "https://git.example.invalid/datalake.git")),
    Step(id: "publish-dev", needs: ["source"], kind: Publish(assets: Assembly(dir: "cdk.out", stage: "Dev"))),
    Step(
        id: "deploy-dev",
        needs: ["publish-dev"],
        kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Assembly(dir: "cdk.out", stage: "Dev")),
    ),
])"#;

#[test]
fn the_assembly_of_a_source_is_planned_from_its_local_checkout_not_from_the_current_directory() {
    let checkout = tempfile::tempdir().unwrap();
    common::copy_dir(&fixture(), &checkout.path().join("cdk.out"));
    let source_dir = format!("source={}", checkout.path().display());
    let out = Test::new().pipeline(FROM_SOURCE).args(&["plan", "pipeline.ron", "--source-dir", &source_dir]).run();
    out.assert_code(0);
    for node in ["publish-dev/AuditWriterFunction-Code", "deploy-dev/Dev-VpcStack", "deploy-dev/Dev-S3Stack"] {
        out.assert_stdout_contains(node);
    }

    // Cloned when it runs: a cdk.out in the current directory says nothing of what the clone will hold.
    let test = Test::new().pipeline(FROM_SOURCE).args(&["plan", "pipeline.ron"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    out.assert_stdout_contains("expands at run time");
    assert!(!out.stdout.contains("deploy-dev/Dev-VpcStack"), "{}", out.dump());
}

#[test]
fn a_deploy_before_the_templates_are_published_says_to_publish_first() {
    let moto = Moto::start();
    bootstrap_by_hand(&moto, DEV);
    let test = moto
        .env(Test::new())
        .pipeline(
            r#"Pipeline(name: "cdk", steps: [
    Step(id: "deploy-dev", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Assembly(dir: "cdk.out", stage: "Dev"))),
])"#,
        )
        .args(&["run", "pipeline.ron", "--output", "json"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(1);
    out.assert_output_contains(
        "the template of stack Dev-VpcStack is not published at s3://cdk-hnb659fds-assets-111111111111-us-east-1/",
    );
}

#[test]
fn an_account_without_the_bootstrap_version_parameter_is_told_to_bootstrap() {
    let moto = Moto::start();
    moto.boto(Some(DEV), r#"client("s3").create_bucket(Bucket="cdk-hnb659fds-assets-111111111111-us-east-1")"#);
    let test = moto.env(Test::new()).pipeline(PIPELINE).args(&["run", "pipeline.ron", "--output", "json"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(1);
    out.assert_output_contains("account 111111111111 is not bootstrapped in us-east-1: SSM parameter /cdk-bootstrap/hnb659fds/version does not exist");
    out.assert_output_contains("runner bootstrap aws://111111111111/us-east-1");
}

#[test]
fn a_stage_that_is_not_in_the_assembly_is_a_plan_error_naming_the_stages() {
    let test =
        Test::new().pipeline(&PIPELINE.replace("stage: \"Dev\"", "stage: \"Staging\"")).args(&["plan", "pipeline.ron"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(2);
    out.assert_stderr_contains("has no stage `Staging`: its stages are Dev, Prod, Test");
}

#[test]
fn a_deploy_for_another_account_than_the_stage_is_refused() {
    let test = Test::new()
        .pipeline(&PIPELINE.replace("account: \"111111111111\"", "account: \"222222222222\""))
        .args(&["plan", "pipeline.ron"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(2);
    out.assert_stderr_contains(
        "is for aws://111111111111/us-east-1, but this Deploy is for aws://222222222222/us-east-1",
    );
}

#[test]
fn plan_diff_previews_the_stacks_of_an_assembly_stage_and_leaves_nothing_behind() {
    let moto = Moto::start();
    bootstrap_by_hand(&moto, DEV);
    let test = moto.env(Test::new()).pipeline(PIPELINE).args(&["plan", "pipeline.ron", "--diff"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    out.assert_stdout_contains("deploy-dev/Dev-VpcStack (aws://111111111111/us-east-1): new stack, 9 resources to add");
    out.assert_stdout_contains("+ Add    EtlJobAuditTableB3D34C34 (AWS::DynamoDB::Table)");
    let state = state_of_dev(&moto);
    assert_eq!(state["stacks"], serde_json::json!({}), "previews leave no stack behind");
}

/// The pipeline with a synth before the Dev stage's Publish and Deploy: their stacks are known when it runs.
fn synthesized_by_the_run() -> String {
    let pipeline = PIPELINE.replace(
        r#"Step(id: "publish-dev","#,
        r#"Step(id: "synth", kind: Shell(commands: ["true"])),
    Step(id: "publish-dev", needs: ["synth"],"#,
    );
    pipeline.replace(r#"needs: ["publish-dev"]"#, r#"needs: ["synth", "publish-dev"]"#)
}

#[test]
fn plan_diff_says_why_stacks_synthesized_by_the_run_cannot_be_previewed_before_a_first_synth() {
    let test = Test::new().pipeline(&synthesized_by_the_run()).args(&["plan", "pipeline.ron", "--diff"]);
    let out = test.run();
    out.assert_code(0);
    out.assert_stdout_contains("(expands at run time)");
    out.assert_stdout_contains(
        "deploy-dev: nothing to preview before the run: its stacks are those of stage Dev of the cloud assembly \
         `cdk.out`, which the steps before it (`synth`, `publish-dev`) write when the pipeline runs (no cloud assembly",
    );
}

#[test]
fn plan_diff_previews_stacks_synthesized_by_the_run_from_the_assembly_a_previous_synth_left() {
    let moto = Moto::start();
    bootstrap_by_hand(&moto, DEV);
    let test = moto.env(Test::new()).pipeline(&synthesized_by_the_run()).args(&["plan", "pipeline.ron", "--diff"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    out.assert_stdout_contains("deploy-dev: the stacks of the cloud assembly at ");
    out.assert_stdout_contains("as a previous synth left it (the run synthesizes it again first)");
    out.assert_stdout_contains("deploy-dev/Dev-VpcStack (aws://111111111111/us-east-1): new stack, 9 resources to add");
    let state = state_of_dev(&moto);
    assert_eq!(state["stacks"], serde_json::json!({}), "previews leave no stack behind");
}

#[test]
fn the_critical_path_goes_through_the_stacks_a_stage_synthesized_by_the_run_expands_into() {
    let moto = Moto::start();
    bootstrap_by_hand(&moto, DEV);
    let pipeline = PIPELINE.replace(
        r#"Step(id: "publish-dev","#,
        r#"Step(id: "synth", kind: Shell(commands: ["true"])),
    Step(id: "publish-dev", needs: ["synth"],"#,
    );
    // A gate between the stage's Publish and its Deploy (as an approval is): the templates are published before
    // the stacks are spliced in, which then wait for nodes already finished.
    let pipeline = pipeline.replace(r#"needs: ["publish-dev"]"#, r#"needs: ["publish-dev", "gate"]"#);
    let pipeline = pipeline.replace(
        "\n])",
        r#"
    Step(id: "gate", needs: ["publish-dev"], kind: Shell(commands: ["true"])),
    Step(id: "after", needs: ["deploy-dev"], kind: Shell(commands: ["true"])),
])"#,
    );
    let test = moto.env(Test::new()).pipeline(&pipeline).args(&["run", "pipeline.ron", "--output", "json"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    let finished: serde_json::Value = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "run_finished")
        .unwrap_or_else(|| panic!("no run_finished\n{}", out.dump()));
    let path: Vec<&str> = finished["critical_path"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(path.last(), Some(&"after"), "the path ends where the run did: {path:?}");
    assert!(path.iter().any(|n| n.starts_with("deploy-dev/")), "through a stack: {path:?}");
}

/// A stage `Platform` with a stack of its own and a nested stage `Platform/Services` (a Stage inside a Stage, as
/// CDK writes it: a `cdk:cloud-assembly` artifact in Platform's manifest, its directory inside Platform's), whose
/// Api stack depends on its Db stack. The nested stage also holds an artifact of a type runner does not know.
fn nested_stage_assembly(test: Test) -> Test {
    let queue = r#"{"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}"#;
    let stack = |file: &str, name: &str, display: &str, deps: &str| {
        format!(
            r#""{file}": {{"type": "aws:cloudformation:stack", "environment": "aws://111111111111/us-east-1",
                "properties": {{"templateFile": "{file}.template.json", "stackName": "{name}"}},
                "dependencies": [{deps}], "displayName": "{display}"}}"#
        )
    };
    test.write(
        "cdk.out/manifest.json",
        r#"{"version": "55.0.0", "artifacts": {"assembly-Platform": {"type": "cdk:cloud-assembly",
            "properties": {"directoryName": "assembly-Platform", "displayName": "Platform"}}}}"#,
    )
    .write(
        "cdk.out/assembly-Platform/manifest.json",
        &format!(
            r#"{{"version": "55.0.0", "artifacts": {{
            {},
            "assembly-Platform-Services": {{"type": "cdk:cloud-assembly",
                "properties": {{"directoryName": "assembly-Platform-Services", "displayName": "Platform/Services"}}}}}}}}"#,
            stack("PlatformBase", "Platform-Base", "Platform/Base", "")
        ),
    )
    .write(
        "cdk.out/assembly-Platform/assembly-Platform-Services/manifest.json",
        &format!(
            r#"{{"version": "55.0.0", "artifacts": {{
            {},
            {},
            "Oddity": {{"type": "cdk:something-new"}}}}}}"#,
            stack("PlatformServicesDb", "Platform-Services-Db", "Platform/Services/Db", ""),
            stack("PlatformServicesApi", "Platform-Services-Api", "Platform/Services/Api", r#""PlatformServicesDb""#)
        ),
    )
    .write("cdk.out/assembly-Platform/PlatformBase.template.json", queue)
    .write("cdk.out/assembly-Platform/assembly-Platform-Services/PlatformServicesDb.template.json", queue)
    .write("cdk.out/assembly-Platform/assembly-Platform-Services/PlatformServicesApi.template.json", queue)
}

fn deploy_stage(stage: &str) -> String {
    format!(
        r#"Pipeline(name: "nested", steps: [
    Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Assembly(dir: "cdk.out", stage: "{stage}"))),
])"#
    )
}

#[test]
fn a_nested_stage_is_deployed_with_its_outer_stage_in_dependency_order_and_addressed_by_path() {
    let moto = Moto::start();
    let test = nested_stage_assembly(moto.env(Test::new())).pipeline(&deploy_stage("Platform"));
    let plan = test.run_with(&["plan", "pipeline.ron"]);
    plan.assert_code(0);
    for node in ["deploy/Platform-Base", "deploy/Platform-Services-Db", "deploy/Platform-Services-Api"] {
        plan.assert_stdout_contains(node);
    }
    let out = test.run_with(&["run", "pipeline.ron", "--output", "json"]);
    out.assert_code(0);
    let order: Vec<String> = out
        .json_lines()
        .into_iter()
        .filter(|e| e["event"] == "node_started")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect();
    let at = |n: &str| order.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} never started: {order:?}"));
    assert!(at("deploy/Platform-Services-Db") < at("deploy/Platform-Services-Api"), "{order:?}");
    // The artifact runner does not know is not dropped silently.
    out.assert_stdout_contains("ignoring artifact `Oddity` of unknown type `cdk:something-new`");
    let state = moto.boto(
        Some(DEV),
        r#"result["stacks"] = sorted((s["StackName"], s["StackStatus"]) for s in client("cloudformation").describe_stacks()["Stacks"])"#,
    );
    assert_eq!(
        state["stacks"],
        serde_json::json!([
            ["Platform-Base", "CREATE_COMPLETE"],
            ["Platform-Services-Api", "CREATE_COMPLETE"],
            ["Platform-Services-Db", "CREATE_COMPLETE"]
        ])
    );

    // The nested stage alone, by its path.
    std::fs::write(test.path().join("pipeline.ron"), deploy_stage("Platform/Services")).unwrap();
    let plan = test.run_with(&["plan", "pipeline.ron"]);
    plan.assert_code(0);
    plan.assert_stdout_contains("deploy/Platform-Services-Api");
    assert!(!plan.stdout.contains("deploy/Platform-Base"), "{}", plan.dump());
    // A stage that is not there names every stage, nested ones too.
    std::fs::write(test.path().join("pipeline.ron"), deploy_stage("Platform/Service")).unwrap();
    let plan = test.run_with(&["plan", "pipeline.ron"]);
    plan.assert_code(2);
    plan.assert_stderr_contains("its stages are Platform, Platform/Services (did you mean `Platform/Services`?)");
}

#[test]
fn a_stage_named_from_the_environment_is_planned_from_its_value() {
    let pipeline = PIPELINE.replace("stage: \"Dev\"", "stage: \"${env:STAGE}\"");
    let test = Test::new().pipeline(&pipeline).env("STAGE", "Dev").args(&["plan", "pipeline.ron"]);
    common::copy_dir(&fixture(), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    out.assert_stdout_contains("deploy-dev/Dev-VpcStack");
    out.assert_stdout_contains("publish-dev/AuditWriterFunction-Code");
}
