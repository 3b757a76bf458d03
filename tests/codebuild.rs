//! Steps dispatched to AWS CodeBuild. Against the emulator (its CodeBuild runs nothing and answers SUCCEEDED at
//! once): the build is started with the right project, polled to completion, and the test plays the build's part
//! by running `runner step` with the dispatch's overrides, so the outputs really travel through S3. Failure and
//! timeout statuses, which the emulator never produces, against the scripted double.

mod aws_double;
mod common;
mod emulator;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_dirs, runner_bin, wait_until, Test};
use emulator::Moto;

const PIPELINE: &str = r#"Pipeline(name: "farm", steps: [
    Step(id: "a", kind: Shell(commands: ["echo X=from-a >> $RUNNER_OUTPUT"])),
    Step(id: "b", needs: ["a"], kind: Shell(commands: ["echo Y=$X-built-remotely >> $RUNNER_OUTPUT"]),
         run_on: CodeBuild(project: "builder", outputs_bucket: "runner-outputs", compute_type: "BUILD_GENERAL1_LARGE")),
    Step(id: "c", needs: ["b"], kind: Shell(commands: ["echo $Y > result.txt"])),
])"#;

#[test]
fn a_dispatched_step_runs_through_codebuild_and_its_outputs_come_back_through_s3() {
    let moto = Moto::start();
    moto.boto(
        None,
        r#"
client("s3").create_bucket(Bucket="runner-outputs")
client("codebuild").create_project(name="builder", source={"type": "S3", "location": "src/src.zip"},
    artifacts={"type": "NO_ARTIFACTS"}, serviceRole="arn:aws:iam::123456789012:role/codebuild",
    environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"})
"#,
    );
    let test = moto.env(Test::new()).pipeline(PIPELINE).args(&["run", "pipeline.ron"]);
    let running = test.spawn();
    // The dispatch record appears when the build was started.
    let record =
        || run_dirs(test.path()).first().and_then(|d| std::fs::read_to_string(d.join("b.codebuild.json")).ok());
    assert!(wait_until(Duration::from_secs(30), || record().is_some()), "b was dispatched: {}", running.stdout());
    let record: serde_json::Value = serde_json::from_str(&record().unwrap()).unwrap();
    let builds =
        moto.boto(None, r#"result["ids"] = client("codebuild").list_builds_for_project(projectName="builder")["ids"]"#);
    assert_eq!(builds["ids"].as_array().unwrap().len(), 1);
    assert_eq!(builds["ids"][0], record["build"]);
    let env: HashMap<String, String> = serde_json::from_value(record["environment"].clone()).unwrap();
    assert_eq!(env["RUNNER_STEP"], "b");
    assert_eq!(env["RUNNER_PIPELINE"], "pipeline.ron");
    assert!(env["RUNNER_OUTPUTS"].starts_with("s3://runner-outputs/runner/farm/"));
    assert!(env["RUNNER_INPUTS"].contains("from-a"), "the upstream outputs travel with the build");

    // Play the build: `runner step` with the dispatch's environment, in a checkout of its own.
    let build_dir = tempfile::tempdir().unwrap();
    std::fs::copy(test.path().join("pipeline.ron"), build_dir.path().join("pipeline.ron")).unwrap();
    let played = Command::new(runner_bin())
        .args(["step", &env["RUNNER_PIPELINE"], &env["RUNNER_STEP"]])
        .current_dir(build_dir.path())
        .envs(&env)
        .env("CODEBUILD_BUILD_ID", record["build"].as_str().unwrap())
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("CI", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));

    let out = running.wait_for_exit(Duration::from_secs(60));
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(test.path().join("result.txt")).unwrap(), "from-a-built-remotely\n");
    out.assert_stdout_contains("started CodeBuild build builder:");
}

fn double_run(aws: &aws_double::ScriptedAws) -> common::Output {
    aws.env(Test::new()).pipeline(PIPELINE).args(&["run", "pipeline.ron"]).run()
}

fn build(status: &str, phase: &str, context: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "builder:5b2a0c4e-0000-4000-8000-000000000001",
        "buildStatus": status,
        "currentPhase": phase,
        "logs": {"deepLink": "https://console.aws.amazon.com/cloudwatch/home#logEvent:group=/aws/codebuild/builder"},
        "phases": [{"phaseType": phase, "phaseStatus": status, "contexts": [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": context}]}]
    })
}

/// https://docs.aws.amazon.com/codebuild/latest/APIReference/API_BatchGetBuilds.html and
/// API_BuildPhase.html: a build whose command failed ends FAILED, the reason in its phase's contexts.
#[test]
fn a_failed_build_fails_the_step_quoting_codebuild_and_skips_what_follows() {
    let aws = aws_double::ScriptedAws::start();
    let started = serde_json::json!({"build": build("IN_PROGRESS", "QUEUED", "")});
    aws.script("GetCallerIdentity", vec![aws_double::caller_identity("123456789012")])
        .script("StartBuild", vec![aws_double::json(started)])
        .script(
            "BatchGetBuilds",
            vec![
                aws_double::json(serde_json::json!({"builds": [build("IN_PROGRESS", "BUILD", "")]})),
                aws_double::json(serde_json::json!({"builds": [build("FAILED", "BUILD", "Error while executing command: runner step pipeline.ron b. Reason: exit status 1")]})),
            ],
        );
    let out = double_run(&aws);
    out.assert_code(1);
    out.assert_stdout_contains("CodeBuild build builder:5b2a0c4e-0000-4000-8000-000000000001 ended FAILED: Error while executing command: runner step pipeline.ron b. Reason: exit status 1");
    out.assert_stdout_contains("[c] skipped");
    let start = aws.requests().into_iter().find(|r| r.action == "StartBuild").expect("StartBuild");
    let body: serde_json::Value = serde_json::from_str(&start.params["json"]).unwrap();
    assert_eq!(body["projectName"], "builder");
    assert_eq!(body["computeTypeOverride"], "BUILD_GENERAL1_LARGE");
    let names: Vec<&str> =
        body["environmentVariablesOverride"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    for name in ["RUNNER_PIPELINE", "RUNNER_STEP", "RUNNER_RUN_ID", "RUNNER_OUTPUTS", "RUNNER_INPUTS"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
}

/// API_Build.html: `buildStatus` TIMED_OUT when the build ran past the project's timeout.
#[test]
fn a_timed_out_build_fails_the_step() {
    let aws = aws_double::ScriptedAws::start();
    aws.script("GetCallerIdentity", vec![aws_double::caller_identity("123456789012")])
        .script("StartBuild", vec![aws_double::json(serde_json::json!({"build": build("IN_PROGRESS", "QUEUED", "")}))])
        .script(
            "BatchGetBuilds",
            vec![aws_double::json(
                serde_json::json!({"builds": [build("TIMED_OUT", "BUILD", "Build has timed out. ")]}),
            )],
        );
    let out = double_run(&aws);
    out.assert_code(1);
    out.assert_stdout_contains("ended TIMED_OUT: Build has timed out.");
}
