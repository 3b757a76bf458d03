//! One Deploy over many accounts (and regions): `accounts: [...]` (from the file, a parameter or the environment)
//! expands into one node per target and stack, deployed concurrently within the pipeline's `max_parallel`, each in
//! its own account through AssumeRole. Against the emulator.

mod common;
mod emulator;

use common::*;
use emulator::Moto;

/// A stack with nothing account-specific in it: one queue, its URL as an output.
const QUEUE: &str = r#"{
  "AWSTemplateFormatVersion": "2010-09-09",
  "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
  "Outputs": {"QueueUrl": {"Value": {"Ref": "Queue"}}}
}
"#;

fn accounts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("1111111111{i:02}")).collect()
}

fn pipeline(accounts: &str, max_parallel: usize) -> String {
    format!(
        r#"Pipeline(
    name: "fleet",
    defaults: (max_parallel: {max_parallel}),
    parameters: {{"accounts": (description: "the accounts of the fleet")}},
    values: {{"accounts": "{accounts}"}},
    steps: [
        Step(id: "deploy", kind: Deploy(
            accounts: ["${{param:accounts}}"],
            region: "us-east-1",
            stacks: Listed([(name: "Queue", template: "queue.json")]),
        )),
    ],
)
"#
    )
}

/// The most nodes running at once, from the JSON events (started minus finished, in order).
fn most_at_once(out: &Output) -> usize {
    let (mut running, mut most) = (0usize, 0usize);
    for event in out.json_lines() {
        match event["event"].as_str() {
            Some("node_started") => {
                running += 1;
                most = most.max(running);
            }
            Some("node_finished") => running = running.saturating_sub(1),
            _ => {}
        }
    }
    most
}

#[test]
fn a_deploy_to_ten_accounts_runs_one_node_per_account_at_most_max_parallel_at_once() {
    let moto = Moto::start();
    let ten = accounts(10);
    let t = moto.env(Test::new().pipeline(&pipeline(&ten.join(","), 4)).write("queue.json", QUEUE));

    let plan = t.run_with(&["plan", "pipeline.ron", "--full"]);
    plan.assert_success().assert_stdout_contains("1 step, 10 nodes");
    for account in &ten {
        plan.assert_stdout_contains(&format!("deploy/{account}/Queue"));
        plan.assert_stdout_contains(&format!("to aws://{account}/us-east-1: created with CreateStack if new"));
    }

    let out = t.run_with(&["run", "pipeline.ron", "--output", "json"]);
    out.assert_success();
    let statuses = out.statuses();
    assert_eq!(statuses.len(), 10, "{}", out.dump());
    for account in &ten {
        let node = format!("deploy/{account}/Queue");
        assert_eq!(statuses.get(&node).map(String::as_str), Some("succeeded"), "{node}\n{}", out.dump());
        let url = out.finished(&node)["outputs"]["QueueUrl"].as_str().unwrap_or_default().to_string();
        assert!(url.contains(account), "the queue of {node} is not in its account: {url}");
    }
    assert_eq!(most_at_once(&out), 4, "max_parallel 4 should run four targets at once\n{}", out.dump());
    // Each account holds its own stack (AssumeRole into it acts in it).
    for account in [&ten[0], &ten[9]] {
        let found = moto.boto(
            Some(account),
            r#"result["stacks"] = [s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"]]"#,
        );
        assert_eq!(found["stacks"], serde_json::json!(["Queue"]), "account {account}");
    }

    // Nothing changed: every target is up to date, still within the limit.
    let again = t.run_with(&["run", "pipeline.ron", "--output", "json", "--jobs", "3"]);
    again.assert_success();
    assert!(again.statuses().values().all(|s| s == "up_to_date"), "{}", again.dump());
    assert_eq!(most_at_once(&again), 3, "{}", again.dump());
}

#[test]
fn accounts_from_parameter_store_become_nodes_when_the_step_runs() {
    let moto = Moto::start();
    // A StringList, as a team keeps its fleet: read when the run starts, so the plan cannot know the targets.
    moto.boto(
        None,
        r#"client("ssm").put_parameter(Name="/fleet/accounts", Value="222222222201,222222222202", Type="StringList")"#,
    );
    let text = r#"Pipeline(
    name: "fleet",
    steps: [
        Step(id: "deploy", kind: Deploy(
            accounts: ["${ssm:/fleet/accounts}"],
            regions: ["us-east-1", "eu-west-1"],
            stacks: Listed([(name: "Queue", template: "queue.json")]),
        )),
        Step(id: "after", needs: ["deploy"], kind: Shell(commands: ["echo ${steps.deploy/222222222201-eu-west-1/Queue.outputs.QueueUrl}"])),
    ],
)
"#;
    let t = moto.env(Test::new().pipeline(text).write("queue.json", QUEUE));
    let plan = t.run_with(&["plan", "pipeline.ron"]);
    plan.assert_success().assert_stdout_contains("(expands at run time)");

    let out = t.run_with(&["run", "pipeline.ron", "--output", "json"]);
    out.assert_success();
    let statuses = out.statuses();
    for node in [
        "deploy/222222222201-us-east-1/Queue",
        "deploy/222222222201-eu-west-1/Queue",
        "deploy/222222222202-us-east-1/Queue",
        "deploy/222222222202-eu-west-1/Queue",
    ] {
        assert_eq!(statuses.get(node).map(String::as_str), Some("succeeded"), "{node}\n{}", out.dump());
    }
    // The step after it waited for every target, and reads their outputs by node id.
    let url = out.finished("deploy/222222222201-eu-west-1/Queue")["outputs"]["QueueUrl"].as_str().unwrap().to_string();
    assert!(url.contains("222222222201"), "{url}");
    out.assert_stdout_contains(&url);
}

#[test]
fn a_bad_or_repeated_account_is_reported_at_its_entry() {
    let text = r#"Pipeline(
    name: "fleet",
    steps: [
        Step(id: "deploy", kind: Deploy(
            accounts: ["111111111101", "11111111110x", "111111111101"],
            region: "us-east-1",
            stacks: Listed([(name: "Queue", template: "queue.json")]),
        )),
    ],
)
"#;
    let out = Test::new().pipeline(text).run_with(&["validate", "pipeline.ron"]);
    out.assert_code(2);
    out.assert_stderr_contains("account `11111111110x` is not a 12-digit AWS account id");
    let (line, column) = position(text, "\"11111111110x\"");
    assert_diagnostic(&out, text, line, column);
    out.assert_stderr_contains("account `111111111101` is listed twice");
    let (line, column) = position_nth(text, "\"111111111101\"", 1);
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn account_and_accounts_together_are_refused() {
    let text = r#"Pipeline(
    name: "fleet",
    steps: [
        Step(id: "deploy", kind: Deploy(
            account: "111111111101",
            accounts: ["111111111102"],
            region: "us-east-1",
            stacks: Listed([(name: "Queue", template: "queue.json")]),
        )),
    ],
)
"#;
    let out = Test::new().pipeline(text).run_with(&["validate", "pipeline.ron"]);
    out.assert_code(2).assert_stderr_contains("give `account` or `accounts`, not both");
    let (line, column) = position(text, "[\"111111111102\"]");
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn an_assembly_cannot_be_deployed_to_a_list_of_accounts() {
    let text = r#"Pipeline(
    name: "fleet",
    steps: [
        Step(id: "deploy", kind: Deploy(
            accounts: ["111111111101", "111111111102"],
            region: "us-east-1",
            stacks: Assembly(dir: "cdk.out", stage: "Dev"),
        )),
    ],
)
"#;
    let out = Test::new().pipeline(text).run_with(&["validate", "pipeline.ron"]);
    out.assert_code(2).assert_stderr_contains("the stacks of an assembly name their own account and region");
}
