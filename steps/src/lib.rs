//! The step kinds of `runner`, one module each, and the catalog that hands them to the engine.

pub mod approval;
pub mod assembly;
pub mod aws;
pub mod bootstrap;
pub mod codebuild;
pub mod deploy;
pub mod destroy;
pub mod docker;
pub mod parameter_store;
pub mod process;
pub mod publish;
pub mod self_update;
pub mod shell;
pub mod source;
pub mod stage;
pub mod template;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use engine::model::{Step, StepKind};
use engine::step::{Catalog, Expansion, PlanContext, StepError, StepRunner, Upstream};

/// Every step kind this build knows, with the run's options that steps need.
#[derive(Debug, Clone, Default)]
pub struct StepCatalog {
    /// `--source-dir`: Source step id -> local checkout used instead of cloning.
    pub source_dirs: HashMap<String, PathBuf>,
    /// The pipeline's `aws_endpoint_url`.
    pub aws_endpoint: Option<String>,
    /// AWS sessions, shared by every node of the run.
    pub aws: Arc<aws::Sessions>,
    pub approvals: approval::ApprovalSettings,
    pub self_update: self_update::SelfUpdateSettings,
    /// Run every step here, ignoring `run_on` (inside a build started by a dispatch).
    pub local_only: bool,
    /// The pipeline file given to `runner run`, named to dispatched builds.
    pub pipeline_file: String,
    /// Inside AWS CodeBuild: Source steps use its checkout instead of fetching.
    pub codebuild: Option<source::CodeBuild>,
    /// Source step id -> the commit it checks out, whatever its reference points at now: the commit a trigger saw
    /// (`runner serve`), so that the run deploys the commit that started it.
    pub source_commits: HashMap<String, String>,
    /// The stages whose templates were checked in this run, and their verdicts: every stack node of a stage asks.
    pub stage_checks: Arc<stage::StageChecks>,
}

impl StepCatalog {
    /// The checkout a Source step uses instead of fetching: `--source-dir`, else CodeBuild's.
    pub fn checkout_of(&self, source_id: &str) -> Option<source::Checkout> {
        match self.source_dirs.get(source_id) {
            Some(dir) => Some(source::Checkout::Dir(dir.clone())),
            None => self.codebuild.as_ref().map(|cb| cb.checkout_for(source_id)),
        }
    }

    /// The workspace a step will run in, when what is there now is what it will find: nothing upstream may change
    /// it first. A Shell step may write it (a `cdk synth`), a Source clones it only when it runs (unless a local
    /// checkout stands in for it); with two Sources upstream, which one the step works in is settled at run time.
    /// `None`: read the workspace when the step runs.
    /// [`Self::plan_time_workspace`] of `steps[step]`, for a run's preflight: where its files are now, if nothing
    /// upstream of it can change them before it runs.
    pub fn settled_workspace(&self, steps: &[Step], step: usize, base_dir: &std::path::Path) -> Option<PathBuf> {
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let ctx = PlanContext { base_dir: base_dir.to_path_buf() };
        self.plan_time_workspace(&ctx, Upstream::new(steps, &index, step))
    }

    fn plan_time_workspace(&self, ctx: &PlanContext, upstream: Upstream) -> Option<std::path::PathBuf> {
        let mut checkout = None;
        for step in upstream {
            match &step.kind {
                StepKind::Shell(_) => return None,
                StepKind::Source(_) => {
                    let dir = self.checkout_of(&step.id)?.dir().to_path_buf();
                    if checkout.replace(dir).is_some() {
                        return None;
                    }
                }
                StepKind::Deploy(_)
                | StepKind::Publish(_)
                | StepKind::Approval(_)
                | StepKind::SelfUpdate(_)
                | StepKind::ParameterStore(_) => {}
            }
        }
        Some(ctx.base_dir.join(checkout.unwrap_or_default()))
    }
}

impl Catalog for StepCatalog {
    fn check(&self, kind: &StepKind) -> Vec<(String, String)> {
        match kind {
            StepKind::Source(spec) => source::check(spec),
            StepKind::Shell(spec) => shell::check(spec),
            StepKind::Deploy(spec) => deploy::check(spec),
            StepKind::Approval(spec) => approval::check(spec),
            StepKind::SelfUpdate(spec) => self_update::check(spec),
            StepKind::ParameterStore(spec) => parameter_store::check(spec),
            StepKind::Publish(spec) => publish::check(spec),
        }
    }

    fn describe(&self, step: &Step, part: Option<&str>) -> String {
        match &step.kind {
            StepKind::Source(spec) => source::describe(spec, self.checkout_of(&step.id).as_ref()),
            StepKind::Shell(spec) => shell::describe(spec),
            StepKind::Deploy(spec) => deploy::describe(spec, part),
            StepKind::Approval(spec) => approval::describe(spec),
            StepKind::SelfUpdate(spec) => self_update::describe(spec),
            StepKind::ParameterStore(spec) => parameter_store::describe(spec),
            StepKind::Publish(spec) => publish::describe(spec, part),
        }
    }

    fn expand(&self, step: &Step, ctx: &PlanContext, upstream: Upstream) -> Result<Expansion, String> {
        match &step.kind {
            StepKind::Deploy(spec) => {
                deploy::expand(spec, || self.plan_time_workspace(ctx, upstream), &|name| std::env::var(name).ok())
            }
            StepKind::Publish(spec) => {
                publish::expand(spec, || self.plan_time_workspace(ctx, upstream), &|name| std::env::var(name).ok())
            }
            StepKind::Source(_)
            | StepKind::Shell(_)
            | StepKind::Approval(_)
            | StepKind::SelfUpdate(_)
            | StepKind::ParameterStore(_) => Ok(Expansion::Single),
        }
    }

    fn resolves_fields(&self, step: &Step) -> bool {
        !(matches!(step.kind, StepKind::Source(_)) && self.checkout_of(&step.id).is_some())
    }

    fn runner(&self, step: &Step) -> Result<Box<dyn StepRunner>, StepError> {
        if let (engine::model::RunOn::CodeBuild(target), false) = (&step.run_on, self.local_only) {
            return Ok(Box::new(codebuild::CodeBuildDispatch {
                target: (**target).clone(),
                step: step.clone(),
                pipeline_file: self.pipeline_file.clone(),
                endpoint: self.aws_endpoint.clone(),
                sessions: Arc::clone(&self.aws),
                outputs_grace: std::time::Duration::from_secs(60),
            }));
        }
        Ok(match &step.kind {
            StepKind::Source(spec) => Box::new(source::SourceStep {
                spec: (**spec).clone(),
                local: self.checkout_of(&step.id),
                endpoint: self.aws_endpoint.clone(),
                sessions: Arc::clone(&self.aws),
                pin: self.source_commits.get(step.id.as_str()).cloned(),
            }),
            StepKind::Shell(spec) => Box::new(shell::ShellStep { spec: spec.clone() }),
            StepKind::Deploy(spec) => Box::new(deploy::DeployStep {
                spec: (**spec).clone(),
                endpoint: self.aws_endpoint.clone(),
                sessions: Arc::clone(&self.aws),
                stage_checks: Arc::clone(&self.stage_checks),
            }),
            StepKind::Approval(spec) => {
                Box::new(approval::ApprovalStep { spec: spec.clone(), settings: self.approvals.clone() })
            }
            StepKind::SelfUpdate(spec) => Box::new(self_update::SelfUpdateStep {
                spec: spec.clone(),
                settings: self.self_update.clone(),
                catalog: StepCatalog::default(),
            }),
            StepKind::ParameterStore(spec) => Box::new(parameter_store::ParameterStoreStep {
                spec: (**spec).clone(),
                endpoint: self.aws_endpoint.clone(),
                sessions: Arc::clone(&self.aws),
            }),
            StepKind::Publish(spec) => Box::new(publish::PublishStep {
                spec: (**spec).clone(),
                endpoint: self.aws_endpoint.clone(),
                sessions: Arc::clone(&self.aws),
            }),
        })
    }
}
