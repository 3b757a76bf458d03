//! Dispatch a step to AWS CodeBuild when one machine is not enough: the local engine stays the scheduler; the
//! build runs `runner step <pipeline> <step>` with the step's resolved definition and environment, and writes the
//! step's outputs to S3, where this dispatcher reads them back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType, StatusType};
use engine::event::Stream;
use engine::model::{CodeBuildTarget, Step};
use engine::step::{NodeContext, NodeSuccess, Outputs, StepError, StepRunner, StopSignal};
use serde::{Deserialize, Serialize};

use crate::aws::{aws_reason, Sessions, Target};

/// What the dispatcher hands the build in `RUNNER_INPUTS`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepInputs {
    /// The step as this node sees it: every `${...}` already substituted.
    pub step: Step,
    /// Its environment: outputs of its needs, the pipeline's and the step's env.
    pub env: BTreeMap<String, String>,
}

/// What `runner step` writes to `RUNNER_OUTPUTS` when the step ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// `succeeded`, `failed`, ...
    pub status: String,
    pub outputs: Outputs,
    pub error: Option<String>,
}

/// `s3://bucket/key` split.
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

pub struct CodeBuildDispatch {
    pub target: CodeBuildTarget,
    /// The resolved step (sent to the build).
    pub step: Step,
    pub pipeline_file: String,
    pub endpoint: Option<String>,
    pub sessions: Arc<Sessions>,
    /// How long to wait for the outputs after the build says SUCCEEDED (its last phase may still be uploading).
    pub outputs_grace: Duration,
}

fn env_var(name: &str, value: &str) -> EnvironmentVariable {
    EnvironmentVariable::builder()
        .name(name)
        .value(value)
        .r#type(EnvironmentVariableType::Plaintext)
        .build()
        .expect("name and value are set")
}

async fn pause(stop: &StopSignal, delay: Duration) -> Result<(), engine::step::StopReason> {
    let mut stop = stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        reason = stop.stronger_than(None) => Err(reason),
    }
}

#[async_trait::async_trait]
impl StepRunner for CodeBuildDispatch {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        let region = self
            .target
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        let session = self
            .sessions
            .get(&Target {
                account: String::new(),
                region,
                role: None,
                external_id: None,
                session_name: crate::deploy::session_name(&ctx.pipeline, &ctx.step),
                endpoint: self.endpoint.clone(),
            })
            .await
            .map_err(|e| StepError::failed(e.to_string()))?;
        let codebuild = aws_sdk_codebuild::Client::new(&session.config);
        let key = format!("runner/{}/{}/{}.json", ctx.pipeline, ctx.run_id, ctx.node);
        let outputs_url = format!("s3://{}/{key}", self.target.outputs_bucket);
        let inputs = serde_json::to_string(&StepInputs { step: self.step.clone(), env: ctx.env.clone() })
            .map_err(|e| StepError::invalid(e.to_string()))?;
        let pipeline = self.target.pipeline.clone().unwrap_or_else(|| self.pipeline_file.clone());
        let mut overrides = vec![
            env_var("RUNNER_PIPELINE", &pipeline),
            env_var("RUNNER_STEP", &ctx.step),
            env_var("RUNNER_RUN_ID", &ctx.run_id),
            env_var("RUNNER_OUTPUTS", &outputs_url),
            env_var("RUNNER_INPUTS", &inputs),
        ];
        overrides.extend(self.target.env.iter().map(|(k, v)| env_var(k, v)));
        let source_version = ctx.env.get("COMMIT_ID").cloned();
        let started = codebuild
            .start_build()
            .project_name(&self.target.project)
            .set_environment_variables_override(Some(overrides))
            .set_image_override(self.target.image.clone())
            .set_compute_type_override(self.target.compute_type.as_deref().map(Into::into))
            .set_source_version(source_version)
            .send()
            .await
            .map_err(|e| {
                StepError::failed(format!(
                    "cannot start a build of CodeBuild project {}: {}",
                    self.target.project,
                    aws_reason(&e)
                ))
            })?;
        let build = started.build_value().ok_or_else(|| StepError::failed("StartBuild returned no build"))?;
        let id = build.id().unwrap_or_default().to_string();
        // The dispatch, kept beside the node's log: which build runs the step, with what.
        let record = serde_json::json!({
            "build": id,
            "project": self.target.project,
            "environment": {
                "RUNNER_PIPELINE": pipeline,
                "RUNNER_STEP": ctx.step,
                "RUNNER_RUN_ID": ctx.run_id,
                "RUNNER_OUTPUTS": outputs_url,
                "RUNNER_INPUTS": inputs,
            },
        });
        let record_path =
            ctx.run_dir.join(format!("{}.codebuild.json", engine::walk::node_file_stem(&ctx.node).display()));
        if let Err(e) = engine::record::write_atomic(&record_path, record.to_string().as_bytes()) {
            ctx.events
                .log(Stream::Runner, format!("cannot keep the dispatch record {}: {e}", record_path.display()))
                .await;
        }
        let link = build.logs().and_then(|l| l.deep_link()).unwrap_or("(no log link)");
        ctx.events.log(Stream::Runner, format!("started CodeBuild build {id}; logs: {link}")).await;
        ctx.events
            .log(
                Stream::Runner,
                format!("the build runs `runner step {pipeline} {}`; outputs go to {outputs_url}", ctx.step),
            )
            .await;
        let mut delay = Duration::from_millis(200);
        let final_build =
            loop {
                if let Err(reason) = pause(&ctx.stop, delay).await {
                    let _ = codebuild.stop_build().id(&id).send().await;
                    return Err(StepError::stopped(reason, format!("CodeBuild build {id} was stopped")));
                }
                delay = (delay * 2).min(Duration::from_secs(10));
                let got =
                    codebuild.batch_get_builds().ids(&id).send().await.map_err(|e| {
                        StepError::failed(format!("cannot read CodeBuild build {id}: {}", aws_reason(&e)))
                    })?;
                let Some(b) = got.builds().first().cloned() else { continue };
                let phase = b.current_phase().unwrap_or("?").to_string();
                ctx.events.progress(0, None, "", format!("CodeBuild {phase}")).await;
                if b.build_status() != Some(&StatusType::InProgress) {
                    break b;
                }
            };
        match final_build.build_status() {
            Some(StatusType::Succeeded) => {}
            other => {
                let status = other.map(|s| s.as_str()).unwrap_or("UNKNOWN");
                let contexts: Vec<String> = final_build
                    .phases()
                    .iter()
                    .flat_map(|p| p.contexts())
                    .filter_map(|c| c.message().filter(|m| !m.is_empty()).map(str::to_string))
                    .collect();
                let why = if contexts.is_empty() { String::new() } else { format!(": {}", contexts.join("; ")) };
                return Err(StepError::failed(format!("CodeBuild build {id} ended {status}{why}; logs: {link}")));
            }
        }
        let s3 = session.s3();
        let deadline = tokio::time::Instant::now() + self.outputs_grace;
        let body = loop {
            match s3.get_object().bucket(&self.target.outputs_bucket).key(&key).send().await {
                Ok(obj) => {
                    let bytes = obj.body.collect().await.map_err(|e| StepError::failed(e.to_string()))?;
                    break bytes.into_bytes();
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    if let Err(reason) = pause(&ctx.stop, Duration::from_millis(200)).await {
                        return Err(StepError::stopped(reason, "stopped while waiting for the build's outputs"));
                    }
                }
                Err(e) => {
                    return Err(StepError::failed(format!(
                        "CodeBuild build {id} succeeded but left no outputs at {outputs_url}: {}",
                        aws_reason(&e)
                    )))
                }
            }
        };
        let result: StepResult = serde_json::from_slice(&body)
            .map_err(|e| StepError::failed(format!("the outputs at {outputs_url} are not runner's: {e}")))?;
        if result.status != "succeeded" && result.status != "unchanged" && result.status != "up-to-date" {
            return Err(StepError::failed(format!(
                "the step failed in CodeBuild build {id}: {}",
                result.error.unwrap_or(result.status)
            )));
        }
        Ok(NodeSuccess { outputs: result.outputs, ..Default::default() })
    }
}
