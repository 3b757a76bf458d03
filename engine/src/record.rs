//! The run record: one more consumer of events. Keeps each node's log in `<run-dir>/<node>.log` and the run's
//! state in `<run-dir>/state.json` plus `<run-dir>/journal.jsonl`.
//!
//! Every node transition (started, retrying, finished) is appended to the journal as one JSON line the moment it
//! happens; `state.json` is a snapshot, rewritten atomically (temp file, fsync, rename) when the run starts,
//! grows, restarts or ends, and whenever the journal has grown as long as the run has nodes, after which the
//! journal starts empty again. Reading a run ([`RunState::load`]) is the snapshot with the journal replayed on
//! it. A runner killed with SIGKILL loses nothing (the journal's lines are in the kernel's hands), and each
//! transition costs one short write, not a rewrite of the whole state: rewriting it at every transition wrote
//! 2.8 GB for a run of 2,000 steps.

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
    /// `starting` (recorded, no step started yet), `running`, `succeeded`, `failed`, `interrupted`.
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
    /// Why the run stopped before any step ran (a failed preflight), if it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Time spent walking, summed over the run's walks (a resumed run's first attempt and its resumes), in
    /// milliseconds: unlike `finished - started`, it leaves out the time between a stop and the resume. A walk
    /// cut short by SIGKILL adds nothing.
    #[serde(default)]
    pub working_ms: u64,
}

impl RunState {
    /// Read a run: its `state.json` with the journal's transitions since replayed on it. A damaged file is an
    /// error that names it; a last journal line cut short (the runner died while writing it) is left out, so any
    /// prefix of the journal reads.
    pub fn load(run_dir: &Path) -> Result<RunState, String> {
        let path = run_dir.join(STATE);
        let damaged = |path: &Path, e: &dyn std::fmt::Display| {
            format!("{} is damaged ({e}): this run cannot be resumed or shown; start a new run", path.display())
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut state: RunState = serde_json::from_slice(&bytes).map_err(|e| damaged(&path, &e))?;
        let journal = run_dir.join(JOURNAL);
        let bytes = match std::fs::read(&journal) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(e) => return Err(format!("cannot read {}: {e}", journal.display())),
        };
        // Whole lines only: the last one may be cut anywhere, inside a multi-byte character too.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(&[][..], |end| &bytes[..end]);
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let transition: Transition = serde_json::from_slice(line).map_err(|e| damaged(&journal, &e))?;
            transition.apply(&mut state);
        }
        Ok(state)
    }
}

const STATE: &str = "state.json";
/// The status of a run recorded before its first event.
const STARTING: &str = "starting";
const JOURNAL: &str = "journal.jsonl";

/// One line of the journal: a node's transition, as it changes the node's entry in the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "transition", rename_all = "snake_case")]
enum Transition {
    Started {
        node: String,
        attempt: u32,
        time: String,
    },
    Retrying {
        node: String,
        attempt: u32,
    },
    Finished {
        node: String,
        status: Status,
        duration_ms: Option<u64>,
        error: Option<String>,
        outputs: BTreeMap<String, String>,
        workspace: Option<PathBuf>,
    },
}

impl Transition {
    fn apply(&self, state: &mut RunState) {
        match self {
            Transition::Started { node, attempt, time } => {
                if let Some(n) = state.nodes.get_mut(node) {
                    n.status = "running".into();
                    n.attempts = *attempt;
                    n.started = Some(time.clone());
                }
            }
            Transition::Retrying { node, attempt } => {
                if let Some(n) = state.nodes.get_mut(node) {
                    n.attempts = *attempt;
                }
            }
            Transition::Finished { node, status, duration_ms, error, outputs, workspace } => {
                if let Some(n) = state.nodes.get_mut(node) {
                    n.status = status.as_str().into();
                    if duration_ms.is_some() {
                        n.duration_ms = *duration_ms;
                    }
                    n.error = error.clone();
                    n.outputs = outputs.clone();
                    n.workspace = workspace.clone();
                }
            }
        }
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
    /// Opened at the first transition; emptied at each snapshot.
    journal: Option<File>,
    /// Transitions in the journal since the last snapshot.
    journaled: usize,
    /// The first error met writing; the run goes on, the binary reports it at the end.
    pub error: Option<String>,
    /// When the current walk started (for the run's working time).
    walk_started: Option<std::time::SystemTime>,
}

/// Remove the staging directories (`.<run id>.<pid>.new`) that runners killed between making a run directory and
/// renaming it into place left under `runs`: their process is gone, and no run ever reads them.
fn remove_abandoned_staging(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".new")) else { continue };
        let Some(pid) = rest.rsplit('.').next().and_then(|p| p.parse::<libc::pid_t>().ok()) else { continue };
        if pid > 0 && !process_is_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether process `pid` exists (signal 0 probes without sending anything; EPERM means it exists, owned by
/// someone else).
fn process_is_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl Recorder {
    /// Record a new run `run_id` of `pipeline`, started from `pipeline_file` whose steps' definitions hash to
    /// `steps`. The run's directory is made with its `state.json` (status `starting`) in it: a run directory never
    /// lacks its state, even when the runner is killed before the first step.
    pub fn new(
        run_dir: &Path,
        run_id: &str,
        pipeline: &str,
        pipeline_file: String,
        steps: BTreeMap<String, String>,
    ) -> std::io::Result<Self> {
        let parent = run_dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let state = RunState {
            run_id: run_id.to_string(),
            pipeline: pipeline.to_string(),
            started: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            status: STARTING.to_string(),
            pipeline_file,
            steps,
            ..Default::default()
        };
        // Made beside, then renamed into place: the directory appears with its state in it.
        let name = run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
        let staging = parent.join(format!(".{name}.{}.new", std::process::id()));
        remove_abandoned_staging(parent);
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging)?;
        write_atomic(&staging.join(STATE), &serde_json::to_vec_pretty(&state)?)?;
        std::fs::rename(&staging, run_dir)?;
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(Self::resume(run_dir, state))
    }

    /// The run stopped before any step ran, for `error` (a failed preflight): recorded as failed, with the
    /// reason, so that `history` and `status` say what happened and `--resume` starts it over.
    pub fn not_started(&mut self, error: &str) {
        self.state.status = "failed".into();
        self.state.error = Some(error.to_string());
        self.state.finished = Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
        if let Err(e) = self.save() {
            self.error.get_or_insert_with(|| format!("cannot write the run record in {}: {e}", self.dir.display()));
        }
    }

    /// Go on recording a run that was interrupted: its state (journal replayed) is kept, its nodes' entries
    /// updated.
    pub fn resume(run_dir: &Path, state: RunState) -> Self {
        Recorder {
            dir: run_dir.to_path_buf(),
            state,
            logs: HashMap::new(),
            journal: None,
            journaled: 0,
            error: None,
            walk_started: None,
        }
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
                if self.state.run_id == *run_id && self.state.status != STARTING {
                    self.state.resumed.push(time);
                } else {
                    self.state.run_id = run_id.clone();
                    self.state.started = time;
                }
                self.walk_started = Some(event.time);
                self.state.error = None;
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
                self.record(Transition::Started { node: node.clone(), attempt: *attempt, time })?;
            }
            EventKind::NodeRetrying { node, attempt, reason, .. } => {
                if let Some(log) = self.logs.get_mut(node) {
                    writeln!(log, "--- attempt {} failed: {reason}; retrying", attempt - 1)?;
                }
                self.record(Transition::Retrying { node: node.clone(), attempt: *attempt })?;
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
                self.record(Transition::Finished {
                    node: node.clone(),
                    status: *status,
                    duration_ms: (*status != Status::Skipped).then_some(duration_ms.as_millis() as u64),
                    error: error.clone(),
                    outputs: outputs.clone(),
                    workspace: workspace.clone(),
                })?;
            }
            EventKind::RunFinished { status, .. } => {
                for (_, mut log) in self.logs.drain() {
                    log.flush()?;
                }
                self.walked_until(event.time);
                self.state.finished = Some(time);
                self.state.status = serde_json::to_value(status)?.as_str().unwrap_or("failed").to_string();
                self.save()?;
            }
            EventKind::RunRestarting { reason, .. } => {
                self.walked_until(event.time);
                self.state.restarted = Some(reason.clone());
                self.save()?;
            }
            EventKind::Progress { .. } | EventKind::ApprovalRequested { .. } => {}
        }
        Ok(())
    }

    /// The walk that started at the last `RunStarted` ended at `end`: its time counts as working time.
    fn walked_until(&mut self, end: std::time::SystemTime) {
        if let Some(start) = self.walk_started.take() {
            self.state.working_ms += end.duration_since(start).unwrap_or_default().as_millis() as u64;
        }
    }

    fn add_node(&mut self, id: &str) {
        let log = self.log_path(id).display().to_string();
        self.state.nodes.insert(id.to_string(), NodeState { status: "pending".into(), log, ..Default::default() });
    }

    /// Apply a transition and append it to the journal; snapshot once the journal is as long as the run has
    /// nodes (so each transition costs a constant share of snapshots, whatever the run's size).
    fn record(&mut self, transition: Transition) -> std::io::Result<()> {
        transition.apply(&mut self.state);
        let mut line = serde_json::to_vec(&transition)?;
        line.push(b'\n');
        if self.journal.is_none() {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(JOURNAL))?;
            self.journal = Some(file);
        }
        if let Some(journal) = &mut self.journal {
            // One write per line: a reader never sees half of it but at the very end of a killed run.
            journal.write_all(&line)?;
        }
        self.journaled += 1;
        if self.journaled >= self.state.nodes.len().max(64) {
            self.save()?;
        }
        Ok(())
    }

    /// Write the snapshot, then empty the journal it includes (a crash between the two replays transitions the
    /// snapshot already holds: replaying them again changes nothing).
    fn save(&mut self) -> std::io::Result<()> {
        write_atomic(&self.dir.join(STATE), &serde_json::to_vec_pretty(&self.state)?)?;
        if let Some(journal) = &self.journal {
            journal.set_len(0)?;
        } else if self.journaled == 0 {
            match std::fs::remove_file(self.dir.join(JOURNAL)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.journaled = 0;
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::event::{NodeInfo, RunStatus};

    fn info(id: &str) -> NodeInfo {
        NodeInfo { id: id.into(), step: id.into(), kind: "Shell", needs: Vec::new(), description: Arc::from("") }
    }

    fn started(nodes: &[&str]) -> Event {
        Event::now(EventKind::RunStarted {
            run_id: "r-1".into(),
            pipeline: "p".into(),
            nodes: nodes.iter().map(|n| info(n)).collect(),
            jobs: 1,
        })
    }

    fn finished(node: &str, status: Status) -> Event {
        Event::now(EventKind::NodeFinished {
            node: node.into(),
            status,
            duration_ms: Duration::from_millis(7),
            outputs: BTreeMap::from([("K".to_string(), node.to_string())]),
            error: None,
            workspace: None,
        })
    }

    fn node_started(node: &str) -> Event {
        Event::now(EventKind::NodeStarted { node: node.into(), attempt: 1 })
    }

    #[test]
    fn transitions_since_the_snapshot_are_read_back_from_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r-1");
        let mut recorder = Recorder::new(&dir, "r-1", "p", "p.ron".into(), BTreeMap::new()).unwrap();
        recorder.handle(&started(&["a", "b"]));
        recorder.handle(&node_started("a"));
        recorder.handle(&finished("a", Status::Succeeded));
        recorder.handle(&node_started("b"));
        assert!(recorder.error.is_none(), "{:?}", recorder.error);
        // The snapshot still says what it said when the run started; the journal has the rest.
        let snapshot: RunState = serde_json::from_slice(&std::fs::read(dir.as_path().join(STATE)).unwrap()).unwrap();
        assert_eq!(snapshot.nodes["a"].status, "pending");
        let state = RunState::load(dir.as_path()).unwrap();
        assert_eq!(state.nodes["a"].status, "succeeded");
        assert_eq!(state.nodes["a"].outputs["K"], "a");
        assert_eq!(state.nodes["a"].duration_ms, Some(7));
        assert_eq!(state.nodes["b"].status, "running");
    }

    #[test]
    fn a_journal_as_long_as_the_run_is_folded_into_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r-1");
        let ids: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut recorder = Recorder::new(&dir, "r-1", "p", "p.ron".into(), BTreeMap::new()).unwrap();
        recorder.handle(&started(&refs));
        for id in &refs {
            recorder.handle(&node_started(id));
            recorder.handle(&finished(id, Status::Succeeded));
        }
        // 80 transitions: one snapshot after 64, 16 lines left in the journal.
        let journal = std::fs::read_to_string(dir.as_path().join(JOURNAL)).unwrap();
        assert_eq!(journal.lines().count(), 16, "{journal}");
        let state = RunState::load(dir.as_path()).unwrap();
        assert!(state.nodes.values().all(|n| n.status == "succeeded"));
        recorder.handle(&Event::now(EventKind::RunFinished {
            status: RunStatus::Succeeded,
            duration_ms: Duration::from_millis(1),
            critical_path: Vec::new(),
            critical_path_ms: Duration::ZERO,
        }));
        assert_eq!(std::fs::read_to_string(dir.as_path().join(JOURNAL)).unwrap(), "");
        assert_eq!(RunState::load(dir.as_path()).unwrap().status, "succeeded");
    }

    #[test]
    fn a_journal_line_cut_short_by_a_kill_is_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r-1");
        let mut recorder = Recorder::new(&dir, "r-1", "p", "p.ron".into(), BTreeMap::new()).unwrap();
        recorder.handle(&started(&["a", "b"]));
        recorder.handle(&node_started("a"));
        let mut journal = std::fs::OpenOptions::new().append(true).open(dir.as_path().join(JOURNAL)).unwrap();
        journal.write_all(br#"{"transition":"finished","node":"a","sta"#).unwrap();
        let state = RunState::load(dir.as_path()).unwrap();
        assert_eq!(state.nodes["a"].status, "running");
    }

    #[test]
    fn a_journal_cut_inside_a_multi_byte_character_is_read_up_to_its_last_whole_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r-1");
        let mut recorder = Recorder::new(&dir, "r-1", "p", "p.ron".into(), BTreeMap::new()).unwrap();
        recorder.handle(&started(&["a", "b"]));
        recorder.handle(&node_started("a"));
        let mut done = finished("a", Status::Succeeded);
        if let EventKind::NodeFinished { outputs, .. } = &mut done.kind {
            outputs.insert("GREETING".into(), "grüße, 世界".into());
        }
        recorder.handle(&done);
        recorder.handle(&node_started("b"));
        let journal = std::fs::read(dir.join(JOURNAL)).unwrap();
        let whole = RunState::load(&dir).unwrap();
        assert_eq!(whole.nodes["a"].outputs["GREETING"], "grüße, 世界");
        // Every prefix reads; the state it gives is that of the whole lines in it.
        for cut in 0..=journal.len() {
            std::fs::write(dir.join(JOURNAL), &journal[..cut]).unwrap();
            let state = RunState::load(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let lines = journal[..cut].iter().filter(|b| **b == b'\n').count();
            let a = if lines >= 2 {
                "succeeded"
            } else if lines == 1 {
                "running"
            } else {
                "pending"
            };
            assert_eq!(state.nodes["a"].status, a, "cut at {cut}");
            assert_eq!(state.nodes["b"].status, if lines >= 3 { "running" } else { "pending" }, "cut at {cut}");
        }
    }

    #[test]
    fn a_damaged_journal_line_is_an_error_that_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r-1");
        let mut recorder = Recorder::new(&dir, "r-1", "p", "p.ron".into(), BTreeMap::new()).unwrap();
        recorder.handle(&started(&["a"]));
        std::fs::write(dir.as_path().join(JOURNAL), "not json\n").unwrap();
        let err = RunState::load(dir.as_path()).unwrap_err();
        assert!(err.contains("journal.jsonl is damaged"), "{err}");
    }
}
