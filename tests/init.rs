//! `runner init` in the directory of a CDK app: the real fixture (`fixtures/cdk-app`, its `cdk.out` synthesized by
//! CDK) gets a pipeline of its stages in the app's order, each into the account and region its stacks name.

mod common;

use common::*;

fn cdk_app() -> Test {
    let test = Test::new();
    copy_dir(&repo_root().join("fixtures/cdk-app"), test.path());
    test
}

#[test]
fn init_writes_a_pipeline_of_the_cdk_apps_stages_that_validates() {
    let test = cdk_app();
    let out = test.run_with(&["init", "--name", "datalake"]);
    out.assert_code(0);
    out.assert_stderr_contains("for each stage (Dev, Test, Prod)");
    out.assert_stdout_contains("pipeline.ron: pipeline `datalake` is valid");
    let text = test.read("pipeline.ron").expect("pipeline.ron written");
    for (stage, account) in [("Dev", "111111111111"), ("Test", "222222222222"), ("Prod", "333333333333")] {
        let id = stage.to_lowercase();
        assert!(text.contains(&format!("Publish(assets: Assembly(dir: \"cdk.out\", stage: \"{stage}\"))")), "{text}");
        assert!(text.contains(&format!("Step(id: \"deploy-{id}\", needs: [\"publish-{id}\"]")), "{text}");
        let deploy = &text[text.find(&format!("\"deploy-{id}\"")).unwrap()..];
        assert!(deploy.contains(&format!("account: \"{account}\"")), "{stage} into {account}\n{text}");
    }
    assert!(text.contains("\"npm ci\", \"npx cdk synth --output cdk.out\""), "{text}");
    assert!(
        text.find("deploy-dev") < text.find("approve-test") && text.find("approve-test") < text.find("approve-prod")
    );
    // The pipeline it wrote plans, with the checkout as its source.
    let plan = test.run_with(&["plan", "pipeline.ron", "--source-dir", "."]);
    plan.assert_code(0);
    plan.assert_stdout_contains("deploy-prod");
    // It does not overwrite without --force.
    let again = test.run_with(&["init"]);
    again.assert_code(2);
    again.assert_stderr_contains("pipeline.ron exists: pass --force");
    test.run_with(&["init", "--force"]).assert_code(0);
}

#[test]
fn init_outside_a_cdk_app_says_what_it_looks_for() {
    let out = Test::new().args(&["init"]).run();
    out.assert_code(2);
    out.assert_stderr_contains("no CDK app in");
    out.assert_stderr_contains("cdk.json not found");
}
