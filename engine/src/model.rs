//! The pipeline as written in its RON file: plain serde types, externally tagged, no `untagged` or `flatten`
//! (they would ruin the error messages serde gives for a bad file).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Pipeline")]
pub struct Pipeline {
    /// Names the run state under `.runner/`.
    pub name: String,
    #[serde(default)]
    pub defaults: Defaults,
    pub steps: Vec<Step>,
}

/// Settings every step falls back to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Defaults")]
pub struct Defaults {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub retry_backoff: Option<String>,
    #[serde(default)]
    pub max_parallel: Option<usize>,
}

/// One step: an id, what it waits for, and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Step")]
pub struct Step {
    pub id: String,
    #[serde(default)]
    pub needs: Vec<String>,
    pub kind: StepKind,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub retry_backoff: Option<String>,
}

/// What a step does. One variant per step kind; each kind is one module in the `steps` crate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepKind {
    Source(SourceSpec),
    Shell(ShellSpec),
}

impl StepKind {
    /// The kind's name as written in RON.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Source(_) => "Source",
            StepKind::Shell(_) => "Shell",
        }
    }
}

/// Clone a git repository into the run's workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A URL or a local path.
    pub repository: String,
    /// Left out: the remote's default branch.
    #[serde(default)]
    pub reference: Option<GitReference>,
}

/// Which revision a Source checks out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GitReference {
    Branch(String),
    Tag(String),
    Commit(String),
}

/// Run commands through `sh -c`, or one program with arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellSpec {
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub program: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
}
