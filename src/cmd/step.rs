//! `runner step FILE STEP`: the step as the dispatcher resolved it (RUNNER_INPUTS), run alone, here, through the
//! run API; its result goes to RUNNER_OUTPUTS (s3://bucket/key) or, without it, to stdout as JSON. What a build
//! started by `run_on: CodeBuild(...)` runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use engine::validate::closest;
use runner::run::RunRequest;

use crate::cli::OutputFormat;

pub fn main(file: &Path, step_id: &str, state_dir: &Path) -> Result<ExitCode, String> {
    let planned = runner::pipeline::load_for(file, &[], runner::pipeline::Purpose::Run)?;
    let pipeline = &planned.plan.pipeline.loaded.pipeline;
    let Some(written) = pipeline.steps.iter().find(|s| s.id == step_id) else {
        let hint = closest(step_id, pipeline.steps.iter().map(|s| s.id.as_str()))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(format!("error: `{step_id}` is not a step of `{}`{hint}\n", pipeline.name));
    };
    let inputs: steps::codebuild::StepInputs = match std::env::var("RUNNER_INPUTS") {
        Ok(json) => serde_json::from_str(&json).map_err(|e| format!("error: RUNNER_INPUTS is not runner's: {e}\n"))?,
        Err(_) => steps::codebuild::StepInputs { step: written.clone(), env: Default::default() },
    };
    if inputs.step.id != step_id {
        return Err(format!("error: RUNNER_INPUTS holds step `{}`, not `{step_id}`\n", inputs.step.id));
    }
    let mut alone = pipeline.clone();
    let mut step = inputs.step;
    step.needs.clear();
    step.run_on = engine::model::RunOn::Local;
    alone.defaults.env.extend(inputs.env);
    alone.steps = vec![step];
    let config = ron::ser::PrettyConfig::default()
        .extensions(ron::extensions::Extensions::IMPLICIT_SOME | ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES);
    let text = ron::ser::to_string_pretty(&alone, config)
        .map_err(|e| format!("error: cannot write the step's pipeline: {e}\n"))?;
    if let Some(dir) = std::env::var_os("CODEBUILD_SRC_DIR").map(PathBuf::from) {
        std::env::set_current_dir(&dir).map_err(|e| format!("error: cannot enter {}: {e}\n", dir.display()))?;
    }
    let state = if state_dir.is_absolute() {
        state_dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| e.to_string())?.join(state_dir)
    };
    std::fs::create_dir_all(&state).map_err(|e| format!("error: cannot create {}: {e}\n", state.display()))?;
    let one = state.join(format!("step-{step_id}.ron"));
    std::fs::write(&one, text).map_err(|e| format!("error: cannot write {}: {e}\n", one.display()))?;
    let planned = runner::pipeline::load_for(&one, &[], runner::pipeline::Purpose::Run)?;
    let mut request = RunRequest::new(planned, one, state.clone());
    request.force = true;
    request.local_only = true;
    let end = super::run::execute(request, OutputFormat::Plain, None)?;
    let recorded = engine::record::RunState::load(&end.run_dir).map_err(|e| format!("error: {e}\n"))?;
    let node = recorded.nodes.get(step_id).cloned().unwrap_or_default();
    let result = steps::codebuild::StepResult { status: node.status, outputs: node.outputs, error: node.error };
    let json = serde_json::to_vec(&result).map_err(|e| e.to_string())?;
    let name = &pipeline.name;
    match std::env::var("RUNNER_OUTPUTS") {
        Ok(url) => write_outputs(&url, json, name, step_id, pipeline.defaults.aws_endpoint_url.clone())?,
        Err(_) => println!("{}", String::from_utf8_lossy(&json)),
    }
    Ok(ExitCode::from(end.exit_code()))
}

/// The step's result to `s3://bucket/key`, with the caller's credentials.
fn write_outputs(
    url: &str,
    json: Vec<u8>,
    pipeline: &str,
    step_id: &str,
    endpoint: Option<String>,
) -> Result<(), String> {
    let (bucket, key) = steps::codebuild::parse_s3_url(url)
        .ok_or_else(|| format!("error: RUNNER_OUTPUTS `{url}` is not s3://bucket/key\n"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        let target = steps::aws::Target {
            account: String::new(),
            region,
            role: None,
            external_id: None,
            session_name: steps::deploy::session_name(pipeline, step_id),
            endpoint,
        };
        let session = steps::aws::Sessions::default().get(&target).await.map_err(|e| format!("error: {e}\n"))?;
        session.s3().put_object().bucket(&bucket).key(&key).body(json.into()).send().await.map_err(|e| {
            format!("error: cannot write the step's outputs to {url}: {}\n", steps::aws::aws_reason(&e))
        })?;
        eprintln!("outputs written to {url}");
        Ok(())
    })
}
