//! `runner bootstrap` against a real AWS emulator (moto): three accounts prepared through an organization access
//! role, then the CDK fixture's stages published and deployed into them as CDK's defaults expect.

mod common;
mod emulator;

use common::{repo_root, Output, Test};
use emulator::Moto;

/// The account the emulator's default credentials act in: the deployment account.
const DEPLOYMENT: &str = "123456789012";
const ACCOUNTS: [(&str, &str); 3] = [("Dev", "111111111111"), ("Test", "222222222222"), ("Prod", "333333333333")];

fn bootstrap(moto: &Moto, account: &str) -> Output {
    let role = format!("arn:aws:iam::{account}:role/OrganizationAccountAccessRole");
    moto.env(Test::new())
        .args(&[
            "bootstrap",
            &format!("aws://{account}/us-east-1"),
            "--trust",
            DEPLOYMENT,
            "--role",
            &role,
            "--output",
            "json",
        ])
        .run()
}

#[test]
fn bootstrap_prepares_three_accounts_and_the_cdk_fixture_then_deploys_into_each() {
    let moto = Moto::start();
    for (_, account) in ACCOUNTS {
        let out = bootstrap(&moto, account);
        out.assert_code(0);
        assert_eq!(out.statuses()[&format!("bootstrap-{account}-us-east-1/CDKToolkit")], "succeeded", "{}", out.dump());
        let state = moto.boto(
            Some(account),
            &format!(
                r#"
s3 = client("s3")
bucket = "cdk-hnb659fds-assets-{account}-us-east-1"
rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
result["sse"] = rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
iam = client("iam")
result["roles"] = sorted(r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("cdk-"))
lookup = "cdk-hnb659fds-lookup-role-{account}-us-east-1"
result["lookup_policies"] = iam.list_role_policies(RoleName=lookup)["PolicyNames"]
result["repositories"] = [r["repositoryName"] for r in client("ecr").describe_repositories()["repositories"]]
result["version"] = client("ssm").get_parameter(Name="/cdk-bootstrap/hnb659fds/version")["Parameter"]["Value"]
trust = iam.get_role(RoleName="cdk-hnb659fds-deploy-role-{account}-us-east-1")["Role"]["AssumeRolePolicyDocument"]
result["trust"] = str(trust)
result["stack"] = client("cloudformation").describe_stacks(StackName="CDKToolkit")["Stacks"][0]["StackStatus"]
"#
            ),
        );
        assert_eq!(state["sse"], "aws:kms", "{state}");
        assert_eq!(state["stack"], "CREATE_COMPLETE");
        assert_eq!(state["version"], "21");
        assert_eq!(
            state["roles"],
            serde_json::json!([
                format!("cdk-hnb659fds-cfn-exec-role-{account}-us-east-1"),
                format!("cdk-hnb659fds-deploy-role-{account}-us-east-1"),
                format!("cdk-hnb659fds-file-publishing-role-{account}-us-east-1"),
                format!("cdk-hnb659fds-image-publishing-role-{account}-us-east-1"),
                format!("cdk-hnb659fds-lookup-role-{account}-us-east-1"),
            ])
        );
        // Read-only through the AWS managed policy (which the emulator does not attach from a template), and never
        // kms:Decrypt.
        assert_eq!(state["lookup_policies"], serde_json::json!(["no-decrypt"]), "{state}");
        assert_eq!(
            state["repositories"],
            serde_json::json!([format!("cdk-hnb659fds-container-assets-{account}-us-east-1")]),
            "docker assets have their repository: {state}"
        );
        assert!(state["trust"].as_str().unwrap().contains(DEPLOYMENT), "the deployment account is trusted: {state}");
    }
    // Once more: nothing to change.
    let again = bootstrap(&moto, ACCOUNTS[0].1);
    again.assert_code(0);
    assert_eq!(again.statuses()["bootstrap-111111111111-us-east-1/CDKToolkit"], "unchanged", "{}", again.dump());

    // The fixture, synthesized with CDK's defaults, publishes and deploys into the bootstrapped accounts as is.
    let mut steps = String::new();
    for (stage, account) in ACCOUNTS {
        let lower = stage.to_lowercase();
        steps.push_str(&format!(
            r#"
    Step(id: "publish-{lower}", kind: Publish(assets: Assembly(dir: "cdk.out", stage: "{stage}"))),
    Step(id: "deploy-{lower}", needs: ["publish-{lower}"],
        kind: Deploy(account: "{account}", region: "us-east-1", stacks: Assembly(dir: "cdk.out", stage: "{stage}"))),"#
        ));
    }
    let test = moto.env(Test::new()).pipeline(&format!("Pipeline(name: \"cdk\", steps: [{steps}\n])")).args(&[
        "run",
        "pipeline.ron",
        "--output",
        "json",
    ]);
    common::copy_dir(&repo_root().join("fixtures/cdk-app/cdk.out"), &test.path().join("cdk.out"));
    let out = test.run();
    out.assert_code(0);
    for (stage, account) in ACCOUNTS {
        let s = out.statuses();
        for stack in ["VpcStack", "S3Stack", "DynamoDbStack"] {
            let node = format!("deploy-{}/{stage}-{stack}", stage.to_lowercase());
            assert_eq!(s.get(&node).map(String::as_str), Some("succeeded"), "{node}:\n{}", out.dump());
        }
        let state = moto.boto(
            Some(account),
            r#"result["stacks"] = sorted(s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"])"#,
        );
        assert_eq!(
            state["stacks"],
            serde_json::json!([
                "CDKToolkit",
                format!("{stage}-DynamoDbStack"),
                format!("{stage}-S3Stack"),
                format!("{stage}-VpcStack")
            ])
        );
    }
}

#[test]
fn bootstrap_with_the_callers_credentials_refuses_an_account_they_do_not_act_in() {
    let moto = Moto::start();
    let out = moto.env(Test::new()).args(&["bootstrap", "aws://111111111111/us-east-1", "--trust", DEPLOYMENT]).run();
    out.assert_code(1);
    out.assert_stderr_contains("the caller's credentials act in account 123456789012, not in account 111111111111");
    // It speaks of bootstrap, and says what to do: act through a role.
    out.assert_stderr_contains("bootstrap acts with the caller's credentials, which must act in account 111111111111");
    out.assert_stderr_contains("pass --role ARN");
    out.assert_stderr_not_contains("a Deploy or Publish cannot act in its account");
    let state = moto.boto(
        Some("111111111111"),
        r#"result["stacks"] = [s["StackName"] for s in client("cloudformation").describe_stacks()["Stacks"]]"#,
    );
    assert_eq!(state["stacks"], serde_json::json!([]));
    // And with the caller's own account, no role is needed.
    let own =
        moto.env(Test::new()).args(&["bootstrap", "aws://123456789012/us-east-1", "--trust", "999999999999"]).run();
    own.assert_code(0);
}

#[test]
fn bootstrap_arguments_are_checked_before_anything_runs() {
    let out = Test::new().args(&["bootstrap", "aws://1234/us-east-1", "--trust", DEPLOYMENT]).run();
    out.assert_code(2);
    out.assert_stderr_contains("account `1234` in `aws://1234/us-east-1` is not a 12-digit AWS account id");
    let out = Test::new().args(&["bootstrap", "aws://111111111111/us-east-1"]).run();
    out.assert_code(2);
    out.assert_stderr_contains("--trust");
}
