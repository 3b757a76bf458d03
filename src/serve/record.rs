//! The server's own records, beside the runs' records under the state dir:
//!
//! - `serve/<pipeline>.json`: the commits of the last run the server started (written before the run starts, so a
//!   server killed at any point never starts that commit again) and the superseded triggers;
//! - `serve/runs/<run-id>.json`: what started a run (commits, cause) and its graph (nodes and needs, the critical
//!   path once it ended), which the run record does not keep.
//!
//! Files are replaced atomically (temp file, fsync, rename); a damaged one is read as empty, with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use engine::record::write_atomic;
use serde::{Deserialize, Serialize};

/// Why a run was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// The branch was seen to move when the server asked the remote.
    Poll,
    /// A GitHub push webhook (its delivery id).
    Webhook { delivery: String },
    /// A person, from the page or the API.
    Manual { by: String },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Poll => f.write_str("poll"),
            Cause::Webhook { delivery } if delivery.is_empty() => f.write_str("webhook"),
            Cause::Webhook { delivery } => write!(f, "webhook {delivery}"),
            Cause::Manual { by } => write!(f, "manual ({by})"),
        }
    }
}

/// A request for a run: the commits a trigger saw (Source step id -> commit id), why, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub commits: BTreeMap<String, String>,
    pub cause: Cause,
    /// RFC 3339.
    pub queued_at: String,
}

impl Trigger {
    pub fn new(commits: BTreeMap<String, String>, cause: Cause) -> Self {
        Trigger { commits, cause, queued_at: now() }
    }

    /// The first commit, shortened: how the trigger is shown.
    pub fn short_commit(&self) -> String {
        self.commits.values().next().map(|c| short(c)).unwrap_or_else(|| "-".to_string())
    }
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// The last run the server started for a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub trigger: Trigger,
    pub started_at: String,
    /// Known once the run is recorded; none when the server died before (or the pipeline could not be loaded).
    pub run_id: Option<String>,
    /// Why no run was recorded (an invalid pipeline file), if so.
    #[serde(default)]
    pub error: Option<String>,
}

/// A trigger replaced by a newer one while it waited (CodePipeline's SUPERSEDED).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Superseded {
    pub trigger: Trigger,
    pub superseded_at: String,
    /// The commits of the trigger that replaced it.
    pub by: BTreeMap<String, String>,
}

/// How many superseded triggers a pipeline's record keeps.
const SUPERSEDED_KEPT: usize = 100;

/// `serve/<pipeline>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub last_started: Option<Started>,
    /// Newest last.
    pub superseded: Vec<Superseded>,
}

impl PipelineRecord {
    pub fn path(serve_dir: &Path, pipeline: &str) -> PathBuf {
        serve_dir.join(format!("{pipeline}.json"))
    }

    pub fn load(path: &Path) -> PipelineRecord {
        read_json(path).unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn supersede(&mut self, old: Trigger, by: &Trigger) {
        self.superseded.push(Superseded { trigger: old, superseded_at: now(), by: by.commits.clone() });
        if self.superseded.len() > SUPERSEDED_KEPT {
            let extra = self.superseded.len() - SUPERSEDED_KEPT;
            self.superseded.drain(..extra);
        }
    }
}

/// A node as the run announced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub id: String,
    pub step: String,
    pub kind: String,
    pub needs: Vec<String>,
    pub description: String,
}

impl From<&engine::event::NodeInfo> for NodeMeta {
    fn from(n: &engine::event::NodeInfo) -> Self {
        NodeMeta {
            id: n.id.to_string(),
            step: n.step.to_string(),
            kind: n.kind.to_string(),
            needs: n.needs.iter().map(|s| s.to_string()).collect(),
            description: n.description.to_string(),
        }
    }
}

/// `serve/runs/<run-id>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunMeta {
    pub run_id: String,
    pub pipeline: String,
    pub trigger: Option<Trigger>,
    pub nodes: Vec<NodeMeta>,
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
}

impl RunMeta {
    pub fn path(serve_dir: &Path, run_id: &str) -> PathBuf {
        serve_dir.join("runs").join(format!("{run_id}.json"))
    }

    /// None when the server did not start the run (a `runner run` in the same state dir) or the file is damaged.
    pub fn load(serve_dir: &Path, run_id: &str) -> Option<RunMeta> {
        read_json(&Self::path(serve_dir, run_id))
    }

    pub fn save(&self, serve_dir: &Path) -> Result<(), String> {
        let path = Self::path(serve_dir, &self.run_id);
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        write_atomic(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("{} is damaged ({e}): read as empty", path.display());
            None
        }
    }
}

/// Now, RFC 3339 with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_record_keeps_the_newest_superseded_triggers() {
        let mut record = PipelineRecord::default();
        let by = Trigger::new(BTreeMap::from([("source".into(), "b".repeat(40))]), Cause::Poll);
        for i in 0..(SUPERSEDED_KEPT + 5) {
            let old = Trigger::new(BTreeMap::from([("source".into(), format!("{i:040}"))]), Cause::Poll);
            record.supersede(old, &by);
        }
        assert_eq!(record.superseded.len(), SUPERSEDED_KEPT);
        assert_eq!(record.superseded[0].trigger.commits["source"], format!("{:040}", 5));
        let dir = tempfile::tempdir().unwrap();
        let path = PipelineRecord::path(dir.path(), "dev");
        record.save(&path).unwrap();
        assert_eq!(PipelineRecord::load(&path).superseded.len(), SUPERSEDED_KEPT);
    }

    #[test]
    fn a_damaged_pipeline_record_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = PipelineRecord::path(dir.path(), "dev");
        std::fs::write(&path, "{not json").unwrap();
        assert!(PipelineRecord::load(&path).last_started.is_none());
    }
}
