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
    /// The pipeline file the run started from.
    #[serde(default)]
    pub pipeline_file: String,
    /// Each step's definition as written (a hash): a resume refuses when completed steps changed.
    #[serde(default)]
    pub steps: BTreeMap<String, String>,
    /// When the run was resumed or restarted.
    #[serde(default)]
    pub resumed: Vec<String>,
    /// Why the run restarted from a new definition (SelfUpdate), if it did.
    #[serde(default)]
    pub restarted: Option<String>,
}

impl RunState {
    /// Read a run's `state.json`; a damaged file is an error that names it.
    pub fn load(run_dir: &Path) -> Result<RunState, String> {
        let path = run_dir.join("state.json");
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            format!("{} is damaged ({e}): this run cannot be resumed or shown; start a new run", path.display())
        })
    }
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
    /// The workspace a node made (a Source's checkout): a resumed run works there again.
    #[serde(default)]
    pub workspace: Option<std::path::PathBuf>,
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
    /// Record a new run, started from `pipeline_file` whose steps' definitions hash to `steps`.
    pub fn new(run_dir: &Path, pipeline_file: String, steps: BTreeMap<String, String>) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        let state = RunState { pipeline_file, steps, ..Default::default() };
        Ok(Recorder { dir: run_dir.to_path_buf(), state, logs: HashMap::new(), error: None })
    }

    /// Go on recording a run that was interrupted: its state is kept, its nodes' entries updated.
    pub fn resume(run_dir: &Path, state: RunState) -> Self {
        Recorder { dir: run_dir.to_path_buf(), state, logs: HashMap::new(), error: None }
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
                if self.state.run_id == *run_id {
                    self.state.resumed.push(time);
                } else {
                    self.state.run_id = run_id.clone();
                    self.state.started = time;
                }
                self.state.pipeline = pipeline.clone();
                self.state.status = "running".into();
                self.state.finished = None;
                for n in nodes {
                    if !self.state.nodes.contains_key(&*n.id) {
                        self.add_node(&n.id);
                    }
                }
                self.save()?;
            }
            EventKind::NodesAdded { nodes, .. } => {
                for n in nodes {
                    if !self.state.nodes.contains_key(&*n.id) {
                        self.add_node(&n.id);
                    }
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
                // Flushed per line: people follow logs with `tail -f` while the step runs.
                if let Some(log) = self.logs.get_mut(node) {
                    writeln!(log, "{line}")?;
                    log.flush()?;
                }
            }
            EventKind::NodeFinished { node, status, duration_ms, outputs, error, workspace } => {
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
                    n.workspace = workspace.clone();
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
            EventKind::RunRestarting { reason, .. } => {
                self.state.restarted = Some(reason.clone());
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
