//! The run record: one more consumer of events. Keeps each node's log in `<run-dir>/<node>.log` and the run's
//! state in `<run-dir>/state.json`, rewritten atomically (temp file, fsync, rename) at every node transition.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Status};
use crate::walk::node_file_stem;

/// What `state.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub pipeline: String,
    pub started: String,
    pub finished: Option<String>,
    /// `running`, `succeeded`, `failed`, `interrupted`.
    pub status: String,
    pub nodes: BTreeMap<String, NodeState>,
}

/// One node in `state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeState {
    /// `pending`, `running`, or a final status.
    pub status: String,
    pub attempts: u32,
    pub started: Option<String>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub log: String,
}

/// Writes logs and state of one run.
pub struct Recorder {
    dir: PathBuf,
    state: RunState,
    logs: HashMap<String, BufWriter<File>>,
    /// The first error met writing; the run goes on, the binary reports it at the end.
    pub error: Option<String>,
}

impl Recorder {
    pub fn new(run_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        Ok(Recorder { dir: run_dir.to_path_buf(), state: RunState::default(), logs: HashMap::new(), error: None })
    }

    fn log_path(&self, node: &str) -> PathBuf {
        let mut p = self.dir.join(node_file_stem(node));
        p.set_extension("log");
        p
    }

    pub fn handle(&mut self, event: &Event) {
        if let Err(e) = self.apply(event) {
            self.error.get_or_insert_with(|| format!("cannot write the run record in {}: {e}", self.dir.display()));
        }
    }

    fn apply(&mut self, event: &Event) -> std::io::Result<()> {
        let time = humantime::format_rfc3339_millis(event.time).to_string();
        match &event.kind {
            EventKind::RunStarted { run_id, pipeline, nodes, .. } => {
                self.state.run_id = run_id.clone();
                self.state.pipeline = pipeline.clone();
                self.state.started = time;
                self.state.status = "running".into();
                for n in nodes {
                    self.add_node(&n.id);
                }
                self.save()?;
            }
            EventKind::NodesAdded { nodes, .. } => {
                for n in nodes {
                    self.add_node(&n.id);
                }
                self.save()?;
            }
            EventKind::NodeStarted { node, attempt } => {
                let path = self.log_path(node);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if !self.logs.contains_key(node) {
                    self.logs.insert(node.clone(), BufWriter::new(File::create(path)?));
                }
                if let Some(n) = self.state.nodes.get_mut(node) {
                    n.status = "running".into();
                    n.attempts = *attempt;
                    n.started = Some(time);
                }
                self.save()?;
            }
            EventKind::NodeRetrying { node, attempt, reason, .. } => {
                if let Some(log) = self.logs.get_mut(node) {
                    writeln!(log, "--- attempt {} failed: {reason}; retrying", attempt - 1)?;
                }
                if let Some(n) = self.state.nodes.get_mut(node) {
                    n.attempts = *attempt;
                }
            }
            EventKind::Log { node, line, .. } => {
                if let Some(log) = self.logs.get_mut(node) {
                    writeln!(log, "{line}")?;
                }
            }
            EventKind::NodeFinished { node, status, duration_ms, outputs, error } => {
                if let Some(mut log) = self.logs.remove(node) {
                    log.flush()?;
                }
                if let Some(n) = self.state.nodes.get_mut(node) {
                    n.status = status.as_str().into();
                    if *status != Status::Skipped {
                        n.duration_ms = Some(duration_ms.as_millis() as u64);
                    }
                    n.error = error.clone();
                    n.outputs = outputs.clone();
                }
                self.save()?;
            }
            EventKind::RunFinished { status, .. } => {
                for (_, mut log) in self.logs.drain() {
                    log.flush()?;
                }
                self.state.finished = Some(time);
                self.state.status = serde_json::to_value(status)?.as_str().unwrap_or("failed").to_string();
                self.save()?;
            }
            EventKind::Progress { .. } | EventKind::ApprovalRequested { .. } => {}
        }
        Ok(())
    }

    fn add_node(&mut self, id: &str) {
        let log = self.log_path(id).display().to_string();
        self.state.nodes.insert(id.to_string(), NodeState { status: "pending".into(), log, ..Default::default() });
    }

    fn save(&self) -> std::io::Result<()> {
        write_atomic(&self.dir.join("state.json"), &serde_json::to_vec_pretty(&self.state)?)
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }
}

/// Replace `path` with `bytes` so that a reader sees the old or the new file, never a mix: temp, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tempfile_in(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    Ok((tmp.clone(), File::create(tmp)?))
}
