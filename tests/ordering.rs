//! Finer ordering, as `cdk deploy` orders its work: a stack of a cloud assembly waits for its own template and the
//! assets its manifest names, not for every asset of the Publish steps its Deploy needs. Against the emulator, with
//! the fixture assembly (`fixtures/cdk-app/cdk.out`) and a docker image asset added to its Prod stage, built by a
//! stand-in `docker` that only finishes once the Dev stage is deployed.

mod common;
mod emulator;

use common::{copy_dir, repo_root, Output, Test};
use emulator::{bootstrap_by_hand, Moto};

/// The fixture assembly with a docker image asset in the Prod stage's DynamoDB stack.
fn assembly_with_an_image(dir: &std::path::Path) {
    copy_dir(&repo_root().join("fixtures/cdk-app/cdk.out"), dir);
    let path = dir.join("assembly-Prod/ProdDynamoDbStackC1B4B536.assets.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let asset_dir = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("asset."))
        .expect("the fixture's staged asset directory")
        .file_name();
    manifest["dockerImages"] = serde_json::json!({
        "0123456789abcdef": {
            "displayName": "Worker Image",
            "source": {"directory": format!("../{}", asset_dir.to_string_lossy())},
            "destinations": {"333333333333-us-east-1": {
                "repositoryName": "cdk-hnb659fds-container-assets-333333333333-us-east-1",
                "imageTag": "0123456789abcdef",
                "region": "us-east-1",
                "assumeRoleArn": "arn:${AWS::Partition}:iam::333333333333:role/cdk-hnb659fds-image-publishing-role-333333333333-us-east-1"
            }}
        }
    });
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

/// A `docker` whose `build` finishes only once `$RELEASE_FLAG` exists (at most 60 s), the rest doing nothing.
const DOCKER: &str = r#"#!/bin/sh
case "$1" in
  --version) echo "Docker version 0.0.0 (test stand-in)" ;;
  build)
    i=0
    while [ ! -e "$RELEASE_FLAG" ]; do
      i=$((i + 1))
      if [ "$i" -gt 600 ]; then echo "the release flag never came" >&2; exit 1; fi
      sleep 0.1
    done
    echo "built" ;;
  login) cat >/dev/null; echo "Login Succeeded" ;;
  *) ;;
esac
"#;

const PIPELINE: &str = r#"Pipeline(name: "ordering", steps: [
    Step(id: "synth", kind: Shell(commands: ["rm -rf cdk.out", "cp -r fixture cdk.out"])),
    // Every stage's assets up front, as CDK Pipelines' Assets stage does: the Dev deploy needs both Publish steps.
    Step(id: "publish-dev", needs: ["synth"], kind: Publish(assets: Assembly(dir: "cdk.out", stage: "Dev"))),
    Step(id: "publish-prod", needs: ["synth"], kind: Publish(assets: Assembly(dir: "cdk.out", stage: "Prod"))),
    Step(
        id: "deploy-dev",
        needs: ["publish-dev", "publish-prod"],
        kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Assembly(dir: "cdk.out", stage: "Dev")),
    ),
    Step(id: "release", needs: ["deploy-dev"], kind: Shell(commands: ["touch release.flag"])),
])"#;

/// Index of the first JSON event of `kind` for `node`.
fn at(out: &Output, kind: &str, node: &str) -> usize {
    out.json_lines()
        .iter()
        .position(|e| e["event"] == kind && e["node"] == node)
        .unwrap_or_else(|| panic!("no {kind} event for {node}\n{}", out.dump()))
}

#[test]
fn a_stack_starts_before_another_stages_assets_are_published() {
    let moto = Moto::start();
    bootstrap_by_hand(&moto, "111111111111");
    bootstrap_by_hand(&moto, "333333333333");
    let t = Test::new().pipeline(PIPELINE).write("bin/docker", DOCKER);
    assembly_with_an_image(&t.path().join("fixture"));
    let docker = t.path().join("bin/docker");
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", t.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let flag = t.path().join("release.flag");
    let t = moto.env(t).env("PATH", &path).env("RELEASE_FLAG", flag.to_str().unwrap());

    let out = t.run_with(&["run", "pipeline.ron", "--output", "json"]);
    // Were the Dev stacks held back until every Prod asset was up, the image would never be built (it waits for the
    // release, which needs the Dev stacks): the run would fail after a minute.
    out.assert_success();
    let image_done = at(&out, "node_finished", "publish-prod/Worker-Image");
    for stack in ["Dev-VpcStack", "Dev-S3Stack", "Dev-DynamoDbStack"] {
        let started = at(&out, "node_started", &format!("deploy-dev/{stack}"));
        assert!(
            started < image_done,
            "deploy-dev/{stack} started only after the Prod image was published\n{}",
            out.dump()
        );
    }
    assert!(at(&out, "node_started", "release") < image_done, "{}", out.dump());
    // Each stack waited for its own template (and the Lambda code, for the DynamoDB stack).
    let added = out
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "nodes_added" && e["node"] == "deploy-dev")
        .unwrap_or_else(|| panic!("deploy-dev expanded at run time\n{}", out.dump()));
    let needs = |id: &str| -> Vec<String> {
        let node = added["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap();
        node["needs"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
    };
    let vpc = needs("deploy-dev/Dev-VpcStack");
    assert!(vpc.contains(&"publish-dev/Dev-VpcStack-Template".to_string()), "{vpc:?}");
    assert!(vpc.iter().all(|n| !n.starts_with("publish-prod/")), "{vpc:?}");
    let tables = needs("deploy-dev/Dev-DynamoDbStack");
    assert!(tables.contains(&"publish-dev/AuditWriterFunction-Code".to_string()), "{tables:?}");
    assert!(tables.contains(&"publish-dev/Dev-DynamoDbStack-Template".to_string()), "{tables:?}");
    assert!(!tables.contains(&"publish-dev/Dev-VpcStack-Template".to_string()), "{tables:?}");
}

#[test]
fn plan_shows_each_stack_after_its_own_assets_only() {
    let t = Test::new().pipeline(
        r#"Pipeline(name: "ordering", steps: [
    Step(id: "publish", kind: Publish(assets: Assembly(dir: "cdk.out", stage: "Dev"))),
    Step(id: "deploy", needs: ["publish"], kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Assembly(dir: "cdk.out", stage: "Dev"))),
])"#,
    );
    copy_dir(&repo_root().join("fixtures/cdk-app/cdk.out"), &t.path().join("cdk.out"));
    let out = t.run_with(&["plan", "pipeline.ron"]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let after = |node: &str| -> String {
        let i = lines
            .iter()
            .position(|l| l.trim_start().starts_with(node))
            .unwrap_or_else(|| panic!("{node}\n{}", out.stdout));
        lines[i + 1].trim().to_string()
    };
    assert_eq!(after("deploy/Dev-VpcStack "), "after: publish/Dev-VpcStack-Template");
    assert_eq!(after("deploy/Dev-S3Stack "), "after: publish/Dev-S3Stack-Template, deploy/Dev-VpcStack");
    assert_eq!(
        after("deploy/Dev-DynamoDbStack "),
        "after: publish/AuditWriterFunction-Code, publish/Dev-DynamoDbStack-Template"
    );
}
