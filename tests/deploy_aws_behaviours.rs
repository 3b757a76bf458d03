//! The deploy state machine against AWS behaviours the emulator cannot produce (moto never rolls back, has no
//! per-resource events, accepts any credentials, never says "No updates are to be performed"). Each test is named
//! for the AWS behaviour it stands for and replays responses transcribed from the AWS API reference page cited.
//! They complement the emulator tests in `deploy.rs`, never replace them.

mod aws_double;
mod common;

use aws_double::{
    assumed_role, caller_identity, change_set, done, error, events, no_stack, stack, template, ScriptedAws,
};
use common::{Output, Test};

const ACCOUNT: &str = "111111111111";
/// What the stacks run before the deploys under test: another template than [`TEMPLATE`].
const OLD_TEMPLATE: &str = "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n";
const TEMPLATE: &str = "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n  Table:\n    Type: AWS::DynamoDB::Table\n";

fn pipeline(method: &str, retries: u32) -> String {
    format!(
        r#"Pipeline(name: "double", steps: [
    Step(id: "deploy", retries: {retries}, retry_backoff: "10ms", kind: Deploy(account: "{ACCOUNT}", region: "us-east-1", method: {method}, stacks: Listed([
        (name: "Data", template: "data.yaml"),
    ]))),
    Step(id: "after", needs: ["deploy"], kind: Shell(commands: ["echo BUCKET=$BucketName >> $RUNNER_OUTPUT"])),
])"#
    )
}

fn run(aws: &ScriptedAws, method: &str, retries: u32) -> Output {
    aws.env(Test::new())
        .write("data.yaml", TEMPLATE)
        .pipeline(&pipeline(method, retries))
        .args(&["run", "pipeline.ron", "--output", "json"])
        .run()
}

/// A double whose role can be assumed and acts in ACCOUNT.
fn with_access() -> ScriptedAws {
    let aws = ScriptedAws::start();
    aws.script("AssumeRole", vec![assumed_role(ACCOUNT)]).script("GetCallerIdentity", vec![caller_identity(ACCOUNT)]);
    aws
}

/// https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors and
/// https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html: AccessDenied (HTTP 403) when the role's
/// trust policy does not let the caller in.
#[test]
fn assume_role_access_denied_stops_the_run_naming_role_account_and_the_bootstrap_hint() {
    let aws = ScriptedAws::start();
    aws.script(
        "AssumeRole",
        vec![error(
            403,
            "Sender",
            "AccessDenied",
            "User: arn:aws:iam::999999999999:user/ci is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-us-east-1",
        )],
    );
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(1);
    out.assert_stderr_contains("cannot assume role arn:aws:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-us-east-1 in account 111111111111");
    out.assert_stderr_contains("AccessDenied: User: arn:aws:iam::999999999999:user/ci is not authorized");
    out.assert_stderr_contains("--trust");
    assert!(!aws.actions().iter().any(|a| a.contains("Stack")), "nothing deployed: {:?}", aws.actions());
}

/// https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html: InvalidClientTokenId (HTTP 403), "The
/// security token included in the request is invalid", for credentials AWS rejects.
#[test]
fn rejected_credentials_are_quoted_and_nothing_is_deployed() {
    let aws = ScriptedAws::start();
    aws.script(
        "AssumeRole",
        vec![error(403, "Sender", "InvalidClientTokenId", "The security token included in the request is invalid.")],
    );
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(1);
    out.assert_stderr_contains("InvalidClientTokenId: The security token included in the request is invalid.");
    out.assert_stderr_contains("account 111111111111");
    assert_eq!(aws.actions(), vec!["AssumeRole"]);
}

/// Credentials that act in another account than the stage's: GetCallerIdentity's `Account` differs.
#[test]
fn credentials_acting_in_another_account_are_refused_before_deploying() {
    let aws = ScriptedAws::start();
    aws.script("AssumeRole", vec![assumed_role(ACCOUNT)])
        .script("GetCallerIdentity", vec![caller_identity("222222222222")]);
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(1);
    out.assert_stderr_contains("act in account 222222222222, not in account 111111111111");
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/troubleshooting.html and
/// API_DescribeStackEvents.html: a create whose resource fails goes CREATE_IN_PROGRESS -> ROLLBACK_IN_PROGRESS ->
/// ROLLBACK_COMPLETE, the reason on the resource's CREATE_FAILED event.
#[test]
fn a_create_that_rolls_back_quotes_the_failing_resource_and_the_rollback() {
    let aws = with_access();
    aws.script(
        "DescribeStacks",
        vec![
            no_stack("Data"),
            stack("Data", "ROLLBACK_IN_PROGRESS", None),
            stack(
                "Data",
                "ROLLBACK_COMPLETE",
                Some("The following resource(s) failed to create: [Bucket]. Rollback requested by user."),
            ),
        ],
    )
    .script(
        "CreateStack",
        vec![done("CreateStack", "<StackId>arn:aws:cloudformation:us-east-1:111111111111:stack/Data/1</StackId>")],
    )
    .script(
        "DescribeStackEvents",
        vec![events(
            "Data",
            &[
                ("Data", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
                (
                    "Bucket",
                    "AWS::S3::Bucket",
                    "CREATE_FAILED",
                    "data already exists in stack arn:aws:cloudformation:us-east-1:111111111111:stack/Other/9",
                ),
                (
                    "Data",
                    "AWS::CloudFormation::Stack",
                    "ROLLBACK_IN_PROGRESS",
                    "The following resource(s) failed to create: [Bucket].",
                ),
                ("Data", "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE", ""),
            ],
        )],
    );
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(1);
    let node = out.finished("deploy/Data");
    assert_eq!(node["status"], "failed");
    let error = node["error"].as_str().unwrap();
    assert!(error.contains("ROLLBACK_COMPLETE"), "{error}");
    assert!(error.contains("Bucket: data already exists in stack"), "{error}");
    assert!(error.contains("rolled back"), "{error}");
    assert_eq!(out.finished("after")["status"], "skipped");
    out.assert_stdout_contains("Bucket CREATE_FAILED data already exists");
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/stack-resource-configuration-complete.html
/// (ROLLBACK_COMPLETE: the stack "can only be deleted"): a stack left there is deleted, then created again.
#[test]
fn a_stack_left_in_rollback_complete_is_deleted_and_created_again() {
    let aws = with_access();
    aws.script(
        "DescribeStacks",
        vec![stack("Data", "ROLLBACK_COMPLETE", None), no_stack("Data"), stack("Data", "CREATE_COMPLETE", None)],
    )
    .script("DeleteStack", vec![done("DeleteStack", "")])
    .script(
        "CreateStack",
        vec![done("CreateStack", "<StackId>arn:aws:cloudformation:us-east-1:111111111111:stack/Data/2</StackId>")],
    )
    .script("DescribeStackEvents", vec![events("Data", &[])]);
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(0);
    let actions: Vec<String> = aws.actions().into_iter().filter(|a| a == "DeleteStack" || a == "CreateStack").collect();
    assert_eq!(actions, vec!["DeleteStack", "CreateStack"]);
    assert_eq!(out.finished("after")["outputs"]["BUCKET"], "data-Data", "outputs flowed");
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-changesets-create.html:
/// a CREATE change set that was never executed leaves the stack in REVIEW_IN_PROGRESS; it is deleted and created.
#[test]
fn a_stack_left_in_review_in_progress_is_deleted_and_created() {
    let aws = with_access();
    aws.script(
        "DescribeStacks",
        vec![stack("Data", "REVIEW_IN_PROGRESS", None), no_stack("Data"), stack("Data", "CREATE_COMPLETE", None)],
    )
    .script("DeleteStack", vec![done("DeleteStack", "")])
    .script("CreateStack", vec![done("CreateStack", "<StackId>x</StackId>")])
    .script("DescribeStackEvents", vec![events("Data", &[])]);
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(0);
    assert!(aws.actions().contains(&"DeleteStack".to_string()));
    assert_eq!(out.finished("deploy/Data")["status"], "succeeded");
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_UpdateStack.html: an update with nothing
/// to change is refused with ValidationError "No updates are to be performed."; `Direct` reports it unchanged.
#[test]
fn update_stack_no_updates_to_be_performed_means_unchanged() {
    let aws = with_access();
    aws.script("GetTemplate", vec![template(OLD_TEMPLATE)])
        .script("DescribeStacks", vec![stack("Data", "UPDATE_COMPLETE", None)])
        .script("UpdateStack", vec![error(400, "Sender", "ValidationError", "No updates are to be performed.")]);
    let out = run(&aws, "Direct", 0);
    out.assert_code(0);
    assert_eq!(out.finished("deploy/Data")["status"], "unchanged");
    assert!(!aws.actions().contains(&"CreateChangeSet".to_string()));
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeChangeSet.html: an empty change
/// set ends FAILED with "The submitted information didn't contain changes..."; it is deleted, nothing executed.
#[test]
fn an_empty_change_set_is_deleted_and_the_stack_unchanged() {
    let aws = with_access();
    aws.script("GetTemplate", vec![template(OLD_TEMPLATE)])
        .script("DescribeStacks", vec![stack("Data", "CREATE_COMPLETE", None)])
        .script("CreateChangeSet", vec![done("CreateChangeSet", "<Id>arn:cs</Id><StackId>arn:stack</StackId>")])
        .script("DescribeChangeSet", vec![change_set("CREATE_PENDING", None), change_set("FAILED", Some("The submitted information didn't contain changes. Submit different information to create a change set."))])
        .script("DeleteChangeSet", vec![done("DeleteChangeSet", "")]);
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(0);
    assert_eq!(out.finished("deploy/Data")["status"], "unchanged");
    let actions = aws.actions();
    assert!(actions.contains(&"DeleteChangeSet".to_string()));
    assert!(!actions.contains(&"ExecuteChangeSet".to_string()), "{actions:?}");
}

/// API_DescribeStackEvents.html: real CloudFormation reports every resource's progress; the runner streams them
/// into the log and the progress line (`2/2 resources`).
#[test]
fn per_resource_events_stream_into_the_log_and_the_progress() {
    let aws = with_access();
    aws.script(
        "DescribeStacks",
        vec![no_stack("Data"), stack("Data", "CREATE_IN_PROGRESS", None), stack("Data", "CREATE_COMPLETE", None)],
    )
    .script("CreateStack", vec![done("CreateStack", "<StackId>x</StackId>")])
    .script(
        "DescribeStackEvents",
        vec![
            events(
                "Data",
                &[
                    ("Data", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
                    ("Bucket", "AWS::S3::Bucket", "CREATE_IN_PROGRESS", ""),
                ],
            ),
            events(
                "Data",
                &[
                    ("Data", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
                    ("Bucket", "AWS::S3::Bucket", "CREATE_IN_PROGRESS", ""),
                    ("Bucket", "AWS::S3::Bucket", "CREATE_COMPLETE", ""),
                    ("Table", "AWS::DynamoDB::Table", "CREATE_COMPLETE", ""),
                    ("Data", "AWS::CloudFormation::Stack", "CREATE_COMPLETE", ""),
                ],
            ),
        ],
    );
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(0);
    let lines = out.json_lines();
    let logs: Vec<&str> = lines
        .iter()
        .filter(|e| e["event"] == "log" && e["node"] == "deploy/Data")
        .filter_map(|e| e["line"].as_str())
        .collect();
    assert!(logs.contains(&"Bucket CREATE_COMPLETE"), "{logs:?}");
    assert!(logs.contains(&"Table CREATE_COMPLETE"), "{logs:?}");
    assert_eq!(logs.iter().filter(|l| **l == "Bucket CREATE_IN_PROGRESS").count(), 1, "each event once: {logs:?}");
    let progress: Vec<(u64, u64)> = lines
        .iter()
        .filter(|e| e["event"] == "progress" && e["node"] == "deploy/Data")
        .map(|e| (e["done"].as_u64().unwrap(), e["total"].as_u64().unwrap()))
        .collect();
    assert_eq!(progress.last(), Some(&(2, 2)), "{progress:?}");
}

/// A failed execute (the change set's update rolled back: UPDATE_ROLLBACK_COMPLETE) must be retryable — CDK
/// Pipelines cannot (aws-cdk#11995). The retry creates a fresh change set rather than re-executing the old one.
#[test]
fn a_failed_execute_is_retried_with_a_fresh_change_set() {
    let aws = with_access();
    aws.script(
        "DescribeStacks",
        vec![
            stack("Data", "CREATE_COMPLETE", None),
            stack("Data", "UPDATE_ROLLBACK_COMPLETE", None),
            stack("Data", "UPDATE_ROLLBACK_COMPLETE", None),
            stack("Data", "UPDATE_COMPLETE", None),
        ],
    )
    .script("GetTemplate", vec![template(OLD_TEMPLATE)])
    .script("CreateChangeSet", vec![done("CreateChangeSet", "<Id>arn:cs</Id><StackId>arn:stack</StackId>")])
    .script("DescribeChangeSet", vec![change_set("CREATE_COMPLETE", None)])
    .script("ExecuteChangeSet", vec![done("ExecuteChangeSet", "")])
    .script("UpdateTerminationProtection", vec![done("UpdateTerminationProtection", "<StackId>x</StackId>")])
    .script(
        "DescribeStackEvents",
        vec![events(
            "Data",
            &[(
                "Table",
                "AWS::DynamoDB::Table",
                "UPDATE_FAILED",
                "Resource handler returned message: \"Throughput exceeds the current quota\"",
            )],
        )],
    );
    let out = run(&aws, "ChangeSet", 1);
    out.assert_code(0);
    let names: Vec<String> = aws
        .requests()
        .into_iter()
        .filter(|r| r.action == "CreateChangeSet")
        .map(|r| r.params["ChangeSetName"].clone())
        .collect();
    assert_eq!(names.len(), 2, "one change set per attempt");
    assert_ne!(names[0], names[1], "the retry made a fresh change set");
    assert_eq!(aws.actions().iter().filter(|a| *a == "ExecuteChangeSet").count(), 2);
    let retry = out.json_lines().into_iter().find(|e| e["event"] == "node_retrying").expect("a retry event");
    assert!(retry["reason"].as_str().unwrap().contains("Throughput exceeds the current quota"), "{retry}");
    assert_eq!(out.finished("deploy/Data")["status"], "succeeded");
}

/// API_GetTemplate.html: the template as submitted. When it, the parameters and the tags match what is to be
/// deployed, no change set is made at all (a CloudFormation change set takes seconds to compute on AWS).
#[test]
fn a_stack_already_running_the_template_is_up_to_date_without_a_change_set() {
    let aws = with_access();
    aws.script("DescribeStacks", vec![stack("Data", "UPDATE_COMPLETE", None)])
        .script("GetTemplate", vec![template(TEMPLATE)]);
    let out = run(&aws, "ChangeSet", 0);
    out.assert_code(0);
    assert_eq!(out.finished("deploy/Data")["status"], "up_to_date");
    assert_eq!(out.finished("after")["outputs"]["BUCKET"], "data-Data", "outputs still flow");
    let actions = aws.actions();
    assert!(!actions.iter().any(|a| a.contains("ChangeSet") || a == "UpdateStack"), "{actions:?}");
}
