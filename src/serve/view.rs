//! What pages and the API show of a run, from one place: a live run's events as they come, or a past run's record
//! (`state.json` and its journal) with the server's meta file. No secret is in it: a Source's token never reaches
//! the run record or a log (the step scrubs it), and notification URLs are not part of a run.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, SystemTime};

use engine::event::{Event, EventKind, RunStatus};
use engine::record::RunState;
use serde::Serialize;

use super::record::{NodeMeta, RunMeta, Trigger};

/// Log lines of each node kept in memory for a live run's page (the whole log is in its file).
pub const TAIL_LINES: usize = 200;

/// A run as shown.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunView {
    pub pipeline: String,
    /// None until the run API recorded it.
    pub run_id: Option<String>,
    /// `queued`, `starting`, `running`, `succeeded`, `failed`, `interrupted`.
    pub status: String,
    /// In progress in this server now.
    pub live: bool,
    pub trigger: Option<Trigger>,
    /// RFC 3339.
    pub started: Option<String>,
    pub finished: Option<String>,
    pub duration_ms: Option<u64>,
    pub nodes: Vec<NodeView>,
    pub critical_path: Vec<String>,
    /// Why nothing ran (an invalid pipeline, a failed preflight), when so.
    pub error: Option<String>,
    /// Lines for people outside the steps: resuming, preflight, waiting for the lock, notifications that failed.
    pub notices: Vec<String>,
    /// The first Source's `COMMIT_ID`, once it ran.
    pub commit: Option<String>,
    #[serde(skip)]
    pub started_at: Option<SystemTime>,
}

/// A node as shown.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeView {
    pub id: String,
    pub step: String,
    pub kind: String,
    pub needs: Vec<String>,
    pub description: String,
    /// `pending`, `running`, `waiting` (an Approval asking), or how it ended (`succeeded`, `failed`, `skipped`,
    /// `cancelled`, `unchanged`, `up-to-date`).
    pub status: String,
    pub attempt: u32,
    pub started: Option<String>,
    pub duration_ms: Option<u64>,
    pub outputs: BTreeMap<String, String>,
    pub error: Option<String>,
    /// What an Approval asks, while it waits.
    pub approval: Option<String>,
    #[serde(skip)]
    pub started_at: Option<SystemTime>,
    /// The last log lines (live runs).
    #[serde(skip)]
    pub tail: VecDeque<String>,
}

impl NodeView {
    fn from_meta(m: &NodeMeta) -> NodeView {
        NodeView {
            id: m.id.clone(),
            step: m.step.clone(),
            kind: m.kind.clone(),
            needs: m.needs.clone(),
            description: m.description.clone(),
            status: "pending".into(),
            ..Default::default()
        }
    }

    /// Finished, whatever the outcome.
    pub fn is_done(&self) -> bool {
        !matches!(self.status.as_str(), "pending" | "running" | "waiting")
    }
}

impl RunView {
    pub fn queued(pipeline: &str, trigger: Trigger) -> RunView {
        RunView {
            pipeline: pipeline.into(),
            status: "starting".into(),
            live: true,
            trigger: Some(trigger),
            ..Default::default()
        }
    }

    pub fn node(&self, id: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn node_mut(&mut self, id: &str) -> Option<&mut NodeView> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Apply one event of a live run.
    pub fn apply(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { run_id, nodes, .. } => {
                self.run_id = Some(run_id.clone());
                self.status = "running".into();
                if self.started_at.is_none() {
                    self.started_at = Some(event.time);
                    self.started = Some(rfc3339(event.time));
                }
                // A restart announces the nodes again: keep what is known of those that stay.
                let old = std::mem::take(&mut self.nodes);
                for n in nodes {
                    let meta = NodeMeta::from(n);
                    let view =
                        old.iter().find(|o| o.id == meta.id).cloned().unwrap_or_else(|| NodeView::from_meta(&meta));
                    self.nodes.push(NodeView { needs: meta.needs, description: meta.description, ..view });
                }
            }
            EventKind::NodesAdded { nodes, .. } => {
                for n in nodes {
                    if self.node(&n.id).is_none() {
                        self.nodes.push(NodeView::from_meta(&NodeMeta::from(n)));
                    }
                }
            }
            EventKind::NodeStarted { node, attempt } => {
                if let Some(n) = self.node_mut(node) {
                    n.status = "running".into();
                    n.attempt = *attempt;
                    if n.started_at.is_none() {
                        n.started_at = Some(event.time);
                        n.started = Some(rfc3339(event.time));
                    }
                }
            }
            EventKind::Log { node, line, .. } => {
                if let Some(n) = self.node_mut(node) {
                    if n.tail.len() == TAIL_LINES {
                        n.tail.pop_front();
                    }
                    n.tail.push_back(line.clone());
                }
            }
            EventKind::NodeRetrying { node, attempt, .. } => {
                if let Some(n) = self.node_mut(node) {
                    n.attempt = *attempt;
                }
            }
            EventKind::ApprovalRequested { node, message } => {
                if let Some(n) = self.node_mut(node) {
                    n.status = "waiting".into();
                    n.approval = Some(message.clone());
                }
            }
            EventKind::NodeFinished { node, status, duration_ms, outputs, error, .. } => {
                if let Some(n) = self.node_mut(node) {
                    n.status = status.as_str().into();
                    n.duration_ms = Some(duration_ms.as_millis() as u64);
                    n.outputs = outputs.clone();
                    n.error = error.clone();
                    n.approval = None;
                    if n.kind == "Source" && self.commit.is_none() {
                        self.commit = outputs.get("COMMIT_ID").cloned();
                    }
                }
            }
            EventKind::RunRestarting { reason, .. } => {
                self.notices.push(format!("restarting from the new pipeline definition: {reason}"));
            }
            EventKind::RunFinished { status, duration_ms, critical_path, .. } => {
                self.status = run_status(*status).into();
                self.duration_ms = Some(duration_ms.as_millis() as u64);
                self.finished = Some(rfc3339(event.time));
                self.critical_path = critical_path.clone();
                self.live = false;
            }
            EventKind::Progress { .. } => {}
        }
    }

    /// A past (or another process's) run from its record. `interrupted`: it is unfinished and nobody runs it.
    pub fn from_record(pipeline: &str, state: &RunState, meta: Option<&RunMeta>, interrupted: bool) -> RunView {
        let mut nodes: Vec<NodeView> = match meta {
            Some(m) if !m.nodes.is_empty() => m.nodes.iter().map(NodeView::from_meta).collect(),
            _ => state
                .nodes
                .keys()
                .map(|id| NodeView {
                    id: id.clone(),
                    step: id.split('/').next().unwrap_or(id).to_string(),
                    status: "pending".into(),
                    ..Default::default()
                })
                .collect(),
        };
        for n in &mut nodes {
            if let Some(s) = state.nodes.get(&n.id) {
                n.status = s.status.clone();
                n.attempt = s.attempts;
                n.started = s.started.clone();
                n.started_at = s.started.as_deref().and_then(parse_time);
                n.duration_ms = s.duration_ms;
                n.outputs = s.outputs.clone();
                n.error = s.error.clone();
            }
            if interrupted && matches!(n.status.as_str(), "running" | "waiting") {
                n.status = "cancelled".into();
                n.error.get_or_insert_with(|| "interrupted: the server stopped while it ran".into());
            }
        }
        let commit = nodes
            .iter()
            .find(|n| n.kind == "Source" || n.outputs.contains_key("COMMIT_ID"))
            .and_then(|n| n.outputs.get("COMMIT_ID").cloned());
        let status = match state.status.as_str() {
            "running" | "starting" if interrupted => "interrupted".to_string(),
            other => other.to_string(),
        };
        let started_at = parse_time(&state.started);
        let finished_at = state.finished.as_deref().and_then(parse_time);
        let duration_ms = match (started_at, finished_at) {
            (Some(s), Some(f)) => f.duration_since(s).ok().map(|d| d.as_millis() as u64),
            _ => None,
        };
        RunView {
            pipeline: pipeline.to_string(),
            run_id: Some(state.run_id.clone()),
            status,
            live: false,
            trigger: meta.and_then(|m| m.trigger.clone()),
            started: Some(state.started.clone()),
            finished: state.finished.clone(),
            duration_ms,
            critical_path: meta.map(|m| m.critical_path.clone()).unwrap_or_default(),
            error: state.error.clone(),
            notices: Vec::new(),
            commit,
            started_at,
            nodes,
        }
    }

    /// The chain of nodes whose durations add up to the longest (the run's own when it ended; else worked out from
    /// the needs and the durations so far, a running node counting its time until now).
    pub fn critical_path(&self) -> Vec<String> {
        if !self.critical_path.is_empty() {
            return self.critical_path.clone();
        }
        let now = SystemTime::now();
        let length = |n: &NodeView| -> u64 {
            match (n.duration_ms, n.started_at) {
                (Some(d), _) => d,
                (None, Some(s)) if !n.is_done() => now.duration_since(s).unwrap_or_default().as_millis() as u64,
                _ => 0,
            }
        };
        // Nodes are announced needs first; a node spliced in later may come after what needs it: a few passes.
        let mut best: BTreeMap<&str, (u64, Option<&str>)> = BTreeMap::new();
        for _ in 0..3 {
            for n in &self.nodes {
                let before = n
                    .needs
                    .iter()
                    .filter_map(|m| best.get(m.as_str()).map(|(len, _)| (*len, m.as_str())))
                    .max_by_key(|(len, _)| *len);
                let total = length(n) + before.map_or(0, |(len, _)| len);
                best.insert(&n.id, (total, before.map(|(_, m)| m)));
            }
        }
        let Some((mut at, _)) = best.iter().max_by_key(|(_, (len, _))| *len).map(|(id, v)| (*id, *v)) else {
            return Vec::new();
        };
        if best[at].0 == 0 {
            return Vec::new();
        }
        let mut path = vec![at.to_string()];
        while let Some(&(_, Some(prev))) = best.get(at) {
            path.push(prev.to_string());
            at = prev;
            if path.len() > self.nodes.len() {
                break;
            }
        }
        path.reverse();
        path
    }

    /// The nodes an Approval lets run: everything downstream of it.
    pub fn downstream_of(&self, node: &str) -> Vec<&NodeView> {
        let mut found: Vec<&NodeView> = Vec::new();
        let mut frontier = vec![node.to_string()];
        while let Some(id) = frontier.pop() {
            for n in self.nodes.iter().filter(|n| n.needs.contains(&id)) {
                if !found.iter().any(|f| f.id == n.id) {
                    found.push(n);
                    frontier.push(n.id.clone());
                }
            }
        }
        found
    }

    /// Time since the run started (to its end when it ended).
    pub fn elapsed(&self) -> Duration {
        match (self.duration_ms, self.started_at) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some(s)) => SystemTime::now().duration_since(s).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }
}

/// One line of a pipeline's history.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub status: String,
    pub started: String,
    pub duration_ms: Option<u64>,
    pub commit: Option<String>,
    pub trigger: Option<Trigger>,
}

impl RunSummary {
    pub fn of(view: &RunView) -> RunSummary {
        RunSummary {
            run_id: view.run_id.clone().unwrap_or_default(),
            status: view.status.clone(),
            started: view.started.clone().unwrap_or_default(),
            duration_ms: view.duration_ms,
            // The Source's checkout; before it ran, the commit the trigger pinned it to.
            commit: view
                .commit
                .clone()
                .or_else(|| view.trigger.as_ref().and_then(|t| t.commits.values().next().cloned())),
            trigger: view.trigger.clone(),
        }
    }
}

pub fn run_status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// Whether another live process holds the pipeline's lock (a `runner run` in the same state dir): then its
/// unfinished run is running, not interrupted.
pub fn locked_by_another(state_dir: &Path, pipeline: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(state_dir.join("locks").join(format!("{pipeline}.lock"))) else {
        return false;
    };
    let mut words = text.split_whitespace();
    while let (Some(key), Some(value)) = (words.next(), words.next()) {
        if key == "pid" {
            let Ok(pid) = value.parse::<i32>() else { return false };
            if pid == std::process::id() as i32 {
                return false;
            }
            // SAFETY: signal 0 only checks that the process exists.
            return unsafe { libc::kill(pid, 0) } == 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, needs: &[&str], ms: u64) -> NodeView {
        NodeView {
            id: id.into(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            status: "succeeded".into(),
            duration_ms: Some(ms),
            ..Default::default()
        }
    }

    #[test]
    fn the_critical_path_follows_the_longest_chain_of_needs() {
        let view = RunView {
            nodes: vec![
                node("source", &[], 10),
                node("slow", &["source"], 500),
                node("fast", &["source"], 20),
                node("deploy", &["slow", "fast"], 30),
            ],
            ..Default::default()
        };
        assert_eq!(view.critical_path(), vec!["source", "slow", "deploy"]);
    }

    #[test]
    fn approving_lets_everything_downstream_run() {
        let view = RunView {
            nodes: vec![
                node("test", &[], 1),
                node("gate", &["test"], 1),
                node("prod/Vpc", &["gate"], 1),
                node("prod/S3", &["prod/Vpc"], 1),
                node("other", &["test"], 1),
            ],
            ..Default::default()
        };
        let ids: Vec<&str> = view.downstream_of("gate").iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, vec!["prod/Vpc", "prod/S3"]);
    }
}
