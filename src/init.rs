//! `runner init`: a starter pipeline for the CDK app in a directory, the shape CDK Pipelines gives one: the
//! source, a synth (install, `cdk synth`), and for each stage of the cloud assembly a Publish of its assets and a
//! Deploy of its stacks into the stage's account and region, an Approval before every stage after the first.
//! The stages come from the assembly `cdk synth` already wrote (`cdk.out`, or cdk.json's `output`).

use std::fmt::Write;
use std::path::Path;

/// One stage of the app, as its assembly says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitStage {
    pub name: String,
    pub account: String,
    pub region: String,
}

/// What `init` found in the directory.
#[derive(Debug, Clone)]
pub struct CdkApp {
    /// cdk.json's `app` command.
    pub app: String,
    /// The assembly directory (cdk.json's `output`, default `cdk.out`).
    pub output: String,
    /// The stages of the synthesized assembly, in its order; empty when it was never synthesized.
    pub stages: Vec<InitStage>,
    /// The commands that install the app's dependencies (from its lock file).
    pub install: Vec<String>,
    /// The repository the pipeline clones: the checkout's `origin`, if any.
    pub repository: Option<String>,
}

/// The CDK app in `dir`; `Err` when there is none (no cdk.json) or its files cannot be read.
pub fn find_app(dir: &Path) -> Result<CdkApp, String> {
    let cdk_json = dir.join("cdk.json");
    let text = std::fs::read_to_string(&cdk_json).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "error: no CDK app in {}: cdk.json not found\n  hint: run `runner init` in the directory of a CDK app \
             (where `cdk synth` runs)\n",
            dir.display()
        ),
        _ => format!("error: cannot read {}: {e}\n", cdk_json.display()),
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("error: {} is not JSON: {e}\n", cdk_json.display()))?;
    let app = json.get("app").and_then(|a| a.as_str()).unwrap_or("").to_string();
    let output = json.get("output").and_then(|o| o.as_str()).unwrap_or("cdk.out").to_string();
    let root = dir.join(&output);
    let mut stages = Vec::new();
    if root.join("manifest.json").is_file() {
        let mut names = steps::assembly::stage_names(&root).map_err(|e| format!("error: {e}\n"))?;
        // In the order the manifest lists them (the app's order: Dev, Test, Prod), which a JSON map forgets.
        let manifest = std::fs::read_to_string(root.join("manifest.json")).unwrap_or_default();
        names.sort_by_key(|n| manifest.find(&format!("\"displayName\": \"{n}\"")).unwrap_or(usize::MAX));
        for name in names {
            let stage = steps::assembly::load_stage(&root, &name).map_err(|e| format!("error: {e}\n"))?;
            let (account, region) = stage
                .stacks
                .first()
                .map(|s| (s.account.clone(), s.region.clone()))
                .unwrap_or_else(|| ("111111111111".into(), "us-east-1".into()));
            stages.push(InitStage { name, account, region });
        }
    }
    let install = if dir.join("package-lock.json").is_file() {
        vec!["npm ci".to_string()]
    } else if dir.join("yarn.lock").is_file() {
        vec!["yarn install --frozen-lockfile".to_string()]
    } else if dir.join("requirements.txt").is_file() {
        vec!["pip install -r requirements.txt".to_string()]
    } else if dir.join("package.json").is_file() {
        vec!["npm install".to_string()]
    } else {
        Vec::new()
    };
    let repository = std::process::Command::new("git")
        .args(["remote", "get-url", "origin"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty());
    Ok(CdkApp { app, output, stages, install, repository })
}

/// An id from a stage name: `Prod` -> `prod`.
fn id_of(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The starter pipeline's text.
pub fn pipeline(name: &str, app: &CdkApp) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "// Written by `runner init` for the CDK app here (cdk.json's app: `{}`).", app.app);
    let _ = writeln!(out, "//");
    let _ = writeln!(out, "//     runner run pipeline.ron --source-dir .     # on this checkout instead of cloning");
    if app.repository.is_none() {
        let _ = writeln!(out, "//     REPO=<git url> runner run pipeline.ron     # cloning it");
    }
    let _ = writeln!(out, "Pipeline(");
    let _ = writeln!(out, "    name: {},", quote(name));
    let _ = writeln!(out, "    steps: [");
    let repository = app.repository.clone().unwrap_or_else(|| "${env:REPO}".to_string());
    let _ = writeln!(out, "        Step(id: \"source\", kind: Source(repository: {})),", quote(&repository));
    let mut commands = app.install.clone();
    commands.push(format!("npx cdk synth --output {}", app.output));
    let commands: Vec<String> = commands.iter().map(|c| quote(c)).collect();
    let _ = writeln!(
        out,
        "        Step(id: \"synth\", needs: [\"source\"], kind: Shell(commands: [{}])),",
        commands.join(", ")
    );
    if app.stages.is_empty() {
        let _ = writeln!(
            out,
            "        // No stages yet: `cdk synth` has not written {} here. For each Stage of the app:",
            app.output
        );
        let _ = writeln!(
            out,
            "        // Step(id: \"publish-dev\", needs: [\"synth\"], kind: Publish(assets: Assembly(dir: \"{}\", stage: \"Dev\"))),",
            app.output
        );
        let _ = writeln!(
            out,
            "        // Step(id: \"deploy-dev\", needs: [\"publish-dev\"], kind: Deploy(account: \"111111111111\", region: \"us-east-1\", stacks: Assembly(dir: \"{}\", stage: \"Dev\"))),",
            app.output
        );
    }
    let mut previous: Option<String> = None;
    for stage in &app.stages {
        let id = id_of(&stage.name);
        let mut needs = vec!["synth".to_string()];
        if let Some(prev) = &previous {
            let _ = writeln!(
                out,
                "        Step(id: \"approve-{id}\", needs: [{}], kind: Approval(message: {}), timeout: \"24h\"),",
                quote(prev),
                quote(&format!("deploy to {}?", stage.name))
            );
            needs = vec![format!("approve-{id}")];
        }
        let needs: Vec<String> = needs.iter().map(|n| quote(n)).collect();
        let _ = writeln!(
            out,
            "        Step(id: \"publish-{id}\", needs: [{}], kind: Publish(assets: Assembly(dir: {}, stage: {}))),",
            needs.join(", "),
            quote(&app.output),
            quote(&stage.name)
        );
        let _ = writeln!(out, "        Step(id: \"deploy-{id}\", needs: [\"publish-{id}\"], kind: Deploy(");
        let _ = writeln!(out, "            account: {}, region: {},", quote(&stage.account), quote(&stage.region));
        let _ =
            writeln!(out, "            stacks: Assembly(dir: {}, stage: {}),", quote(&app.output), quote(&stage.name));
        let _ = writeln!(out, "        )),");
        previous = Some(format!("deploy-{id}"));
    }
    let _ = writeln!(out, "    ],");
    let _ = writeln!(out, ")");
    out
}
