//! The deploy state machine against AWS behaviours the emulator cannot produce (moto never rolls back, has no
//! per-resource events, accepts any credentials, never says "No updates are to be performed"). Each test is named
//! for the AWS behaviour it stands for and replays responses transcribed from the AWS API reference page cited.
//! They complement the emulator tests in `deploy.rs`, never replace them.

mod aws_double;
mod common;

use aws_double::{
    assumed_role, caller_identity, change_set, done, error, events, no_stack, server_error, stack,
    stack_with_parameters, template, ScriptedAws,
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
    // Listing the stack's change sets (for ones an earlier run left) is no change set made.
    assert!(
        !actions.iter().any(|a| (a.contains("ChangeSet") && a != "ListChangeSets") || a == "UpdateStack"),
        "{actions:?}"
    );
}

const ENV_OLD: &str =
    "Parameters:\n  Env:\n    Type: String\n    Default: dev\nResources:\n  Bucket:\n    Type: AWS::S3::Bucket\n";
const ENV_NEW: &str = "Parameters:\n  Env:\n    Type: String\n    Default: dev\nResources:\n  Bucket:\n    Type: AWS::S3::Bucket\n  Table:\n    Type: AWS::DynamoDB::Table\n";

/// A stack deployed with `Env=staging`, updated through a change set whose requests are recorded.
fn updating_env_stack(previous_parameters: bool, body: &str) -> (ScriptedAws, Output) {
    let aws = with_access();
    aws.script("DescribeStacks", vec![stack_with_parameters("Data", "UPDATE_COMPLETE", &[("Env", "staging")])])
        .script("GetTemplate", vec![template(ENV_OLD)])
        .script("ListChangeSets", vec![done("ListChangeSets", "<Summaries/>")])
        .script("CreateChangeSet", vec![done("CreateChangeSet", "<Id>arn:cs</Id><StackId>arn:stack</StackId>")])
        .script("DescribeChangeSet", vec![change_set("CREATE_COMPLETE", None)])
        .script("ExecuteChangeSet", vec![done("ExecuteChangeSet", "")])
        .script("DescribeStackEvents", vec![events("Data", &[])]);
    let out = aws
        .env(Test::new())
        .write("data.yaml", body)
        .pipeline(&format!(
            r#"Pipeline(name: "double", steps: [
    Step(id: "deploy", kind: Deploy(account: "{ACCOUNT}", region: "us-east-1", previous_parameters: {previous_parameters}, stacks: Listed([
        (name: "Data", template: "data.yaml"),
    ]))),
])"#
        ))
        .args(&["run", "pipeline.ron", "--output", "json"])
        .run();
    (aws, out)
}

/// The parameters of the request to `action`: `Parameters.member.N.*` by key.
fn sent_parameters(aws: &ScriptedAws, action: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let request = aws.requests().into_iter().find(|r| r.action == action).expect("the request was made");
    let mut members: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        Default::default();
    for (k, v) in &request.params {
        if let Some(rest) = k.strip_prefix("Parameters.member.") {
            let (n, field) = rest.split_once('.').unwrap();
            members.entry(n.to_string()).or_default().insert(field.to_string(), v.clone());
        }
    }
    members.into_values().collect()
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_Parameter.html: a parameter left out of
/// an update takes its Default; `UsePreviousValue` keeps the deployed value (moto keeps it either way). With
/// `previous_parameters` (the default, like `cdk deploy --previous-parameters`), a parameter the pipeline stops
/// giving is sent as UsePreviousValue, so an unrelated template change does not reset it.
#[test]
fn an_update_keeps_a_parameter_no_longer_given_with_use_previous_value() {
    let (aws, out) = updating_env_stack(true, ENV_NEW);
    out.assert_code(0);
    let sent = sent_parameters(&aws, "CreateChangeSet");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["ParameterKey"], "Env");
    assert_eq!(sent[0]["UsePreviousValue"], "true");
    assert!(!sent[0].contains_key("ParameterValue"), "{sent:?}");
}

/// API_Parameter.html again: with `previous_parameters: false` the parameter is left out, so AWS applies its
/// Default; and since that differs from the deployed `staging`, the stack is not up to date even though its
/// template is unchanged.
#[test]
fn without_previous_parameters_a_parameter_no_longer_given_is_left_to_its_default() {
    let (aws, out) = updating_env_stack(false, ENV_OLD);
    out.assert_code(0);
    assert_eq!(out.finished("deploy/Data")["status"], "succeeded", "{}", out.dump());
    assert!(sent_parameters(&aws, "CreateChangeSet").is_empty());
    assert!(aws.actions().contains(&"ExecuteChangeSet".to_string()));
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_CreateStack.html (ClientRequestToken: "to
/// ensure that CloudFormation successfully received" a request retried) and
/// https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html (HTTP 500 is retried): the retry
/// of a CreateStack is the same request, and a failure quotes the first error, not the retry's
/// AlreadyExistsException.
#[test]
fn a_create_stack_retried_after_http_500_is_the_same_request_and_its_first_error_is_quoted() {
    let aws = with_access();
    aws.script("DescribeStacks", vec![no_stack("Data")]).script(
        "CreateStack",
        vec![server_error(), error(400, "Sender", "AlreadyExistsException", "Stack [Data] already exists")],
    );
    let out = aws
        .env(Test::new())
        .env("AWS_MAX_ATTEMPTS", "2")
        .write("data.yaml", TEMPLATE)
        .pipeline(&pipeline("ChangeSet", 0))
        .args(&["run", "pipeline.ron", "--output", "json"])
        .run();
    out.assert_code(1);
    let tokens: Vec<String> = aws
        .requests()
        .into_iter()
        .filter(|r| r.action == "CreateStack")
        .map(|r| r.params.get("ClientRequestToken").cloned().unwrap_or_default())
        .collect();
    assert_eq!(tokens.len(), 2, "the SDK retried: {tokens:?}");
    assert!(tokens[0].starts_with("runner-create-1-"), "{tokens:?}");
    assert_eq!(tokens[0], tokens[1], "the retry is the same request");
    let error = out.finished("deploy/Data")["error"].as_str().unwrap().to_string();
    let first = error.find("HTTP 500").expect("the first error is quoted");
    let retry = error.find("AlreadyExistsException").expect("the retry's answer is named too");
    assert!(first < retry, "{error}");
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_ExecuteChangeSet.html and
/// API_UpdateStack.html, API_DeleteStack.html: each takes a ClientRequestToken; every call runner makes that is
/// not idempotent sends one, and another attempt of the node sends another.
#[test]
fn execute_update_and_delete_stack_each_send_a_client_request_token() {
    let aws = with_access();
    aws.script("DescribeStacks", vec![stack("Data", "CREATE_COMPLETE", None), stack("Data", "UPDATE_COMPLETE", None)])
        .script("GetTemplate", vec![template(OLD_TEMPLATE)])
        .script("CreateChangeSet", vec![done("CreateChangeSet", "<Id>arn:cs</Id><StackId>arn:stack</StackId>")])
        .script("DescribeChangeSet", vec![change_set("CREATE_COMPLETE", None)])
        .script("ExecuteChangeSet", vec![done("ExecuteChangeSet", "")])
        .script("UpdateStack", vec![done("UpdateStack", "<StackId>x</StackId>")])
        .script("DescribeStackEvents", vec![events("Data", &[])]);
    run(&aws, "ChangeSet", 0).assert_code(0);
    run(&aws, "Direct", 0).assert_code(0);
    let token = |action: &str| {
        aws.requests()
            .into_iter()
            .find(|r| r.action == action)
            .and_then(|r| r.params.get("ClientRequestToken").cloned())
    };
    assert!(token("ExecuteChangeSet").is_some_and(|t| t.starts_with("runner-execute-1-")));
    assert!(token("UpdateStack").is_some_and(|t| t.starts_with("runner-update-1-")));

    let aws = with_access();
    aws.script(
        "DescribeStacks",
        vec![stack("Data", "ROLLBACK_COMPLETE", None), no_stack("Data"), stack("Data", "CREATE_COMPLETE", None)],
    )
    .script("DeleteStack", vec![done("DeleteStack", "")])
    .script("CreateStack", vec![done("CreateStack", "<StackId>x</StackId>")])
    .script("DescribeStackEvents", vec![events("Data", &[])]);
    run(&aws, "ChangeSet", 0).assert_code(0);
    let deleted = aws.requests().into_iter().find(|r| r.action == "DeleteStack").unwrap();
    assert!(deleted.params["ClientRequestToken"].starts_with("runner-delete-1-"), "{deleted:?}");
}
