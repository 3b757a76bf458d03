//! The step kinds of `runner`, one module each, and the catalog that hands them to the engine.

pub mod aws;
pub mod deploy;
pub mod process;
pub mod shell;
pub mod source;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use engine::model::{Step, StepKind};
use engine::step::{Catalog, Expansion, PlanContext, StepError, StepRunner};

/// Every step kind this build knows, with the run's options that steps need.
#[derive(Debug, Clone, Default)]
pub struct StepCatalog {
    /// `--source-dir`: Source step id -> local checkout used instead of cloning.
    pub source_dirs: HashMap<String, PathBuf>,
    /// The pipeline's `aws_endpoint_url`.
    pub aws_endpoint: Option<String>,
    /// AWS sessions, shared by every node of the run.
    pub aws: Arc<aws::Sessions>,
    /// Inside AWS CodeBuild: Source steps use its checkout instead of fetching.
    pub codebuild: Option<source::CodeBuild>,
}

impl StepCatalog {
    /// The checkout a Source step uses instead of fetching: `--source-dir`, else CodeBuild's.
    pub fn checkout_of(&self, source_id: &str) -> Option<source::Checkout> {
        match self.source_dirs.get(source_id) {
            Some(dir) => Some(source::Checkout::Dir(dir.clone())),
            None => self.codebuild.as_ref().map(|cb| cb.checkout_for(source_id)),
        }
    }
}

impl Catalog for StepCatalog {
    fn check(&self, kind: &StepKind) -> Vec<(String, String)> {
        match kind {
            StepKind::Source(spec) => source::check(spec),
            StepKind::Shell(spec) => shell::check(spec),
            StepKind::Deploy(spec) => deploy::check(spec),
        }
    }

    fn describe(&self, step: &Step, part: Option<&str>) -> String {
        match &step.kind {
            StepKind::Source(spec) => source::describe(spec, self.checkout_of(&step.id).as_ref()),
            StepKind::Shell(spec) => shell::describe(spec),
            StepKind::Deploy(spec) => deploy::describe(spec, part),
        }
    }

    fn expand(&self, step: &Step, _ctx: &PlanContext) -> Result<Expansion, String> {
        Ok(match &step.kind {
            StepKind::Deploy(spec) => deploy::expand(spec),
            StepKind::Source(_) | StepKind::Shell(_) => Expansion::Single,
        })
    }

    fn resolves_fields(&self, step: &Step) -> bool {
        !(matches!(step.kind, StepKind::Source(_)) && self.checkout_of(&step.id).is_some())
    }

    fn runner(&self, step: &Step) -> Result<Box<dyn StepRunner>, StepError> {
        Ok(match &step.kind {
            StepKind::Source(spec) => Box::new(source::SourceStep {
                spec: spec.clone(),
                local: self.checkout_of(&step.id),
                endpoint: self.aws_endpoint.clone(),
                sessions: Arc::clone(&self.aws),
            }),
            StepKind::Shell(spec) => Box::new(shell::ShellStep { spec: spec.clone() }),
            StepKind::Deploy(spec) => Box::new(deploy::DeployStep {
                spec: spec.clone(),
                endpoint: self.aws_endpoint.clone(),
                sessions: Arc::clone(&self.aws),
            }),
        })
    }
}
