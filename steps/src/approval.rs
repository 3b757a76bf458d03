//! The Approval step: waits for a person before going on (e.g. before the prod stage). It asks through an event
//! and waits at the approval desk; the terminal reporter prompts, `runner approve` from another shell answers
//! through a file in the run's directory, `--approve STEP` answers up front. In CI with no way to answer it fails
//! at once, saying how to approve, rather than hanging.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::approval::Answer;
use engine::event::Stream;
use engine::model::ApprovalSpec;
use engine::step::{NodeContext, NodeSuccess, Outputs, StepError, StepRunner};

/// How a run can get answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApprovalMode {
    /// The terminal reporter asks the person at the terminal (and `runner approve` works too).
    Prompt,
    /// No terminal: wait for `runner approve` from another shell.
    #[default]
    Wait,
    /// CI with no way to answer: fail at once.
    Fail,
}

/// What the runner knows about approvals for this run.
#[derive(Debug, Clone, Default)]
pub struct ApprovalSettings {
    pub mode: ApprovalMode,
    /// `--approve STEP`.
    pub pre_approved: HashSet<String>,
    /// The pipeline file as the user named it, for the hint.
    pub pipeline_file: String,
}

/// The file `runner approve` writes for a step of a run.
pub fn answer_file(run_dir: &Path, step: &str) -> PathBuf {
    run_dir.join("approvals").join(step)
}

/// Kind-specific problems: `required` is `true` or `false` (once its `${...}` are resolved).
pub fn check(spec: &ApprovalSpec) -> Vec<(String, String)> {
    match spec.required.as_deref() {
        Some(r) if !r.contains("${") && required(Some(r)).is_none() => {
            vec![("required".into(), format!("`required` is `{r}`: write \"true\" or \"false\""))]
        }
        _ => Vec::new(),
    }
}

/// `required` read as a yes or no: left out means yes.
fn required(text: Option<&str>) -> Option<bool> {
    match text.map(str::trim) {
        None => Some(true),
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => None,
    }
}

pub fn describe(spec: &ApprovalSpec) -> String {
    if required(spec.required.as_deref()) == Some(false) {
        return "no approval needed here (required: false): goes on at once".to_string();
    }
    match &spec.message {
        Some(m) => format!("wait for a person's approval: {m}"),
        None => "wait for a person's approval".to_string(),
    }
}

pub struct ApprovalStep {
    pub spec: ApprovalSpec,
    pub settings: ApprovalSettings,
}

#[async_trait::async_trait]
impl StepRunner for ApprovalStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        let approved = |by: &str| {
            let mut outputs = Outputs::new();
            outputs.insert("APPROVED_BY".into(), by.to_string());
            NodeSuccess { outputs, ..Default::default() }
        };
        match required(self.spec.required.as_deref()) {
            Some(true) => {}
            Some(false) => {
                ctx.events.log(Stream::Runner, "no approval needed here (required: false)").await;
                return Ok(approved("not required"));
            }
            None => {
                return Err(StepError::invalid(format!(
                    "`required` is `{}`: write \"true\" or \"false\"",
                    self.spec.required.as_deref().unwrap_or_default()
                )))
            }
        }
        if self.settings.pre_approved.contains(&ctx.step) {
            ctx.events.log(Stream::Runner, "approved up front (--approve)").await;
            return Ok(approved("--approve"));
        }
        let how = format!(
            "approve from another shell with `runner approve {} {} --run {}` (or `--reject`), or run with `--approve {}`",
            self.settings.pipeline_file, ctx.step, ctx.run_id, ctx.step
        );
        let message = self.spec.message.clone().unwrap_or_else(|| format!("approve `{}` to go on?", ctx.step));
        if self.settings.mode == ApprovalMode::Fail {
            return Err(StepError::invalid(format!(
                "`{}` needs a person's approval and nobody can answer here (CI): {how}",
                ctx.step
            )));
        }
        let mut answers = ctx.approvals.register(&ctx.node);
        ctx.events.approval_requested(message).await;
        ctx.events.log(Stream::Runner, format!("waiting for approval: {how}")).await;
        let file = answer_file(&ctx.run_dir, &ctx.step);
        let mut stop = ctx.stop.clone();
        let answer = loop {
            tokio::select! {
                a = &mut answers => match a {
                    Ok(a) => break a,
                    Err(_) => return Err(StepError::failed("the approval desk closed")),
                },
                reason = stop.stronger_than(None) => {
                    ctx.approvals.answer(&ctx.node, Answer { approved: false, by: "the run stopping".into() });
                    return Err(StepError::stopped(reason, "stopped while waiting for approval"));
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    // Only a whole answer counts: anything else (a file being written, or cut short) is no
                    // answer yet, never a rejection.
                    if let Some(approved) = parse_answer(&std::fs::read(&file).unwrap_or_default()) {
                        ctx.approvals.answer(&ctx.node, Answer { approved, by: "runner approve".into() });
                    }
                }
            }
        };
        if answer.approved {
            ctx.events.log(Stream::Runner, format!("approved by {}", answer.by)).await;
            Ok(approved(&answer.by))
        } else {
            Err(StepError::invalid(format!("`{}` was rejected by {}", ctx.step, answer.by)))
        }
    }
}

/// What an answer file written by `runner approve` says: `approved`, `rejected`, or nothing yet.
fn parse_answer(bytes: &[u8]) -> Option<bool> {
    match std::str::from_utf8(bytes).ok()?.trim() {
        "approved" => Some(true),
        "rejected" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_whole_answer_counts() {
        assert_eq!(super::parse_answer(b"approved"), Some(true));
        assert_eq!(super::parse_answer(b"rejected\n"), Some(false));
        for prefix in ["", "a", "appro", "rej", "approve"] {
            assert_eq!(super::parse_answer(prefix.as_bytes()), None, "{prefix:?}");
        }
    }
}
