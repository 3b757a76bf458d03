//! The event stream: the one thing the walker produces. Reporters, the run state and the summary consume it and
//! never drive the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    /// Not run because something it needs failed.
    Skipped,
    /// Stopped or never started because of Ctrl-C or `--fail-fast`.
    Cancelled,
    /// The cloud confirmed there was nothing to do (e.g. an empty change set).
    Unchanged,
    /// Skipped locally: nothing it depends on changed.
    UpToDate,
}

impl Status {
    /// Whether dependents may run after it.
    pub fn is_success(self) -> bool {
        matches!(self, Status::Succeeded | Status::Unchanged | Status::UpToDate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
            Status::Unchanged => "unchanged",
            Status::UpToDate => "up-to-date",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Written by the step itself (e.g. `cloning ... at dev`).
    Runner,
}

/// A node as announced to reporters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub id: Arc<str>,
    pub step: Arc<str>,
    pub kind: &'static str,
    pub needs: Vec<Arc<str>>,
    pub description: Arc<str>,
}

/// Everything that happens during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    RunStarted {
        run_id: String,
        pipeline: String,
        nodes: Vec<NodeInfo>,
        jobs: usize,
    },
    NodeStarted {
        node: String,
        attempt: u32,
    },
    Log {
        node: String,
        stream: Stream,
        line: String,
    },
    Progress {
        node: String,
        done: u64,
        total: Option<u64>,
        unit: String,
        message: String,
    },
    NodeRetrying {
        node: String,
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    /// A node expanded at run time into more nodes, spliced into the graph.
    NodesAdded {
        node: String,
        nodes: Vec<NodeInfo>,
    },
    /// A node waits for a person; the terminal reporter (or another process) answers.
    ApprovalRequested {
        node: String,
        message: String,
    },
    NodeFinished {
        node: String,
        status: Status,
        #[serde(serialize_with = "millis")]
        duration_ms: Duration,
        outputs: BTreeMap<String, String>,
        error: Option<String>,
        /// The workspace the node made (a Source's checkout), for resumed runs.
        #[serde(skip_serializing_if = "Option::is_none")]
        workspace: Option<std::path::PathBuf>,
    },
    /// The walk stopped starting nodes to restart from a new pipeline definition; a new `run_started` follows.
    RunRestarting {
        node: String,
        reason: String,
    },
    RunFinished {
        status: RunStatus,
        #[serde(serialize_with = "millis")]
        duration_ms: Duration,
        critical_path: Vec<String>,
        #[serde(serialize_with = "millis")]
        critical_path_ms: Duration,
    },
}

/// An event with its time.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    pub fn now(kind: EventKind) -> Self {
        Event { time: SystemTime::now(), kind }
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}
