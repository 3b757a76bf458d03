//! `runner destroy` against a real AWS emulator (moto): a stage's stacks deleted in reverse dependency order,
//! termination protection respected, nothing deleted without `--force` when there is no terminal to ask at.
//! (Stacks of queues and parameters: moto cannot delete a stack holding a RouteTable.)

mod common;
mod emulator;

use common::*;
use emulator::Moto;

const BASE: &str = "AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Queue:
    Type: AWS::SQS::Queue
Outputs:
  QueueName:
    Value: !GetAtt Queue.QueueName
    Export:
      Name: base-queue-name
";

const APP: &str = "AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      Tags:
        - Key: base
          Value: !ImportValue base-queue-name
";

const GUARDED: &str = "AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Other:
    Type: AWS::SQS::Queue
";

fn pipeline(guarded: bool) -> String {
    let guarded = if guarded {
        r#"(name: "Guarded", template: "guarded.yaml", termination_protection: true, depends_on: ["Base"]),"#
    } else {
        ""
    };
    format!(
        r#"Pipeline(name: "stage", steps: [
    Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "Base", template: "base.yaml"),
        (name: "App", template: "app.yaml", depends_on: ["Base"]),
        {guarded}
    ]))),
    Step(id: "check", needs: ["deploy"], kind: Shell(commands: ["true"])),
])"#
    )
}

fn stage(moto: &Moto, guarded: bool) -> Test {
    moto.env(Test::new())
        .write("base.yaml", BASE)
        .write("app.yaml", APP)
        .write("guarded.yaml", GUARDED)
        .pipeline(&pipeline(guarded))
}

fn stacks(moto: &Moto) -> Vec<String> {
    let state = moto.boto(
        Some("111111111111"),
        r#"result["stacks"] = sorted(s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE")"#,
    );
    state["stacks"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn destroy_deletes_a_stages_stacks_each_after_those_that_depend_on_it() {
    let moto = Moto::start();
    let test = stage(&moto, false);
    test.run_with(&["run", "pipeline.ron"]).assert_code(0);
    assert_eq!(stacks(&moto), ["App", "Base"]);
    let out = test.run_with(&["destroy", "pipeline.ron", "--force"]);
    out.assert_code(0);
    let (app, base) = (out.stderr.find("deploy/App deleted"), out.stderr.find("deploy/Base deleted"));
    assert!(app.is_some() && base.is_some() && app < base, "App (which imports from Base) goes first\n{}", out.dump());
    out.assert_stderr_contains("destroy: 2 deleted, 0 left");
    assert!(stacks(&moto).is_empty(), "{:?}", stacks(&moto));
    // Again: nothing is there any more.
    let again = test.run_with(&["destroy", "pipeline.ron", "deploy", "--force"]);
    again.assert_code(0);
    again.assert_stderr_contains("deploy/Base was not there");
}

#[test]
fn destroy_leaves_a_protected_stack_and_what_it_depends_on() {
    let moto = Moto::start();
    let test = stage(&moto, true);
    test.run_with(&["run", "pipeline.ron"]).assert_code(0);
    let out = test.run_with(&["destroy", "pipeline.ron", "--force"]);
    out.assert_code(1);
    out.assert_stderr_contains("deploy/Guarded has termination protection: not deleted");
    out.assert_stderr_contains("deploy/App deleted");
    out.assert_stderr_contains("deploy/Base not deleted: deploy/Guarded, which depends on it, is still there");
    assert_eq!(stacks(&moto), ["Base", "Guarded"]);
}

#[test]
fn destroy_deletes_nothing_without_force_when_it_cannot_ask() {
    let moto = Moto::start();
    let test = stage(&moto, false);
    test.run_with(&["run", "pipeline.ron"]).assert_code(0);
    let out = test.run_with(&["destroy", "pipeline.ron"]);
    out.assert_code(2);
    out.assert_stderr_contains("pass --force");
    assert_eq!(stacks(&moto), ["App", "Base"]);
    let shell = test.run_with(&["destroy", "pipeline.ron", "check", "--force"]);
    shell.assert_code(2);
    shell.assert_stderr_contains("`check` is not a Deploy step of `stage`");
    let typo = test.run_with(&["destroy", "pipeline.ron", "deplyo", "--force"]);
    typo.assert_code(2);
    typo.assert_stderr_contains("`deplyo` is not a Deploy step of `stage` (did you mean `deploy`?)");
    assert_eq!(stacks(&moto), ["App", "Base"]);
}
