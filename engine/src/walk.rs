//! The walker: runs every node whose needs are met, at most `jobs` at a time, on tokio. It only emits events;
//! it never prints. A failed node skips everything downstream (marked before anything else is released); a stop
//! (fail-fast abort, Ctrl-C, a second Ctrl-C) only ever escalates.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::approval::ApprovalDesk;
use crate::event::{Event, EventKind, NodeInfo, RunStatus, Status, Stream};
use crate::incremental::{Fingerprint, FingerprintStore, LastSuccess};
use crate::model::Step;
use crate::plan::Plan;
use crate::step::{
    Catalog, EventSink, NodeContext, NodeSuccess, Outputs, StepError, StepErrorKind, StepRunner, StopReason, StopSignal,
};
use crate::subst::{self, Missing};
use crate::validate::StepSettings;

/// How long a node that was told to stop (timeout) may take to wind down before it is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Settings of one walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    pub run_id: String,
    /// Nodes running at once; 0 = unlimited.
    pub jobs: usize,
    pub fail_fast: bool,
    /// Workspace of nodes with no Source upstream.
    pub base_dir: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The environment `${env:...}` reads (checked complete before the walk).
    pub env: Arc<HashMap<String, String>>,
    /// `--force` / `--force-step`.
    pub force: Force,
    /// Nodes of an interrupted run being resumed: done there, reused here.
    pub resumed: HashMap<String, Reused>,
    /// Last successes of incremental steps; `None` runs everything.
    pub fingerprints: Option<FingerprintStore>,
    pub approvals: ApprovalDesk,
}

impl WalkOptions {
    /// Options with no forcing, no resume, no fingerprints.
    pub fn new(run_id: &str, base_dir: PathBuf, state_dir: PathBuf, run_dir: PathBuf) -> Self {
        WalkOptions {
            run_id: run_id.to_string(),
            jobs: 16,
            fail_fast: false,
            base_dir,
            state_dir,
            run_dir,
            env: Arc::default(),
            force: Force::default(),
            resumed: HashMap::new(),
            fingerprints: None,
            approvals: ApprovalDesk::default(),
        }
    }
}

/// Which nodes do their work even when nothing changed.
#[derive(Debug, Clone, Default)]
pub struct Force {
    pub all: bool,
    /// Step or node ids.
    pub ids: HashSet<String>,
}

impl Force {
    pub fn applies(&self, node: &str, step: &str) -> bool {
        self.all || self.ids.contains(node) || self.ids.contains(step)
    }
}

/// A node done in an earlier attempt of this run.
#[derive(Debug, Clone, Default)]
pub struct Reused {
    pub outputs: Outputs,
    pub workspace: Option<PathBuf>,
}

/// How each node ended, and the run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Set when a node asked for a restart: the walk ended early, nothing was marked cancelled.
    pub restart: Option<crate::step::Restart>,
    pub status: RunStatus,
    pub duration: Duration,
    pub nodes: Vec<NodeOutcome>,
    pub critical_path: Vec<String>,
    pub critical_path_duration: Duration,
}

/// How one node ended.
#[derive(Debug, Clone)]
pub struct NodeOutcome {
    pub id: String,
    pub status: Status,
    pub duration: Duration,
    pub error: Option<String>,
}

struct Node {
    id: Arc<str>,
    step: usize,
    part: Option<String>,
    needs: Vec<usize>,
    dependents: Vec<usize>,
    pending: usize,
    status: Option<Status>,
    error: Option<String>,
    outputs: Arc<Outputs>,
    workspace: Option<Arc<PathBuf>>,
    started: Option<Instant>,
    duration: Duration,
    /// Set when fingerprints are kept: what this node's result depends on.
    fingerprint: Option<String>,
}

/// Every node starts with no outputs: one shared empty map, not one allocation per node.
static NO_OUTPUTS: std::sync::LazyLock<Arc<Outputs>> = std::sync::LazyLock::new(Arc::default);

type Finished = (usize, Result<NodeSuccess, StepError>);

/// Walk the plan to the end. `signals` carries Ctrl-C (Interrupt, then Kill); events go to `events`.
pub async fn walk(
    plan: &Plan,
    catalog: Arc<dyn Catalog>,
    options: WalkOptions,
    mut signals: watch::Receiver<Option<StopReason>>,
    events: mpsc::Sender<Event>,
) -> RunOutcome {
    let start = Instant::now();
    let mut w = Walker::new(plan, catalog, options, events);
    w.emit(EventKind::RunStarted {
        run_id: w.options.run_id.clone(),
        pipeline: plan.pipeline.loaded.pipeline.name.clone(),
        nodes: plan.node_infos(),
        jobs: w.options.jobs,
    })
    .await;
    let mut ready: VecDeque<usize> = VecDeque::new();
    let reused: Vec<(usize, Reused)> =
        (0..w.nodes.len()).filter_map(|i| w.options.resumed.get(&*w.nodes[i].id).map(|r| (i, r.clone()))).collect();
    for (i, r) in reused {
        let line = "done in the interrupted run: reused".to_string();
        w.emit(EventKind::Log { node: w.nodes[i].id.to_string(), stream: Stream::Runner, line }).await;
        let success = NodeSuccess {
            status: Some(Status::UpToDate),
            outputs: r.outputs,
            workspace: r.workspace,
            ..Default::default()
        };
        w.finish(i, Ok(success), &mut ready).await;
    }
    // Every node now free to start, in plan order (the reused nodes' releases included).
    ready.clear();
    ready.extend((0..w.nodes.len()).filter(|&i| w.nodes[i].pending == 0 && w.nodes[i].status.is_none()));
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut signals_open = true;
    loop {
        while w.stop.borrow().is_none() && w.restart.is_none() && (w.options.jobs == 0 || tasks.len() < w.options.jobs)
        {
            let Some(i) = ready.pop_front() else { break };
            match w.start(i, &mut tasks).await {
                Ok(None) => {}
                Ok(Some(up_to_date)) => w.finish(i, Ok(up_to_date), &mut ready).await,
                Err(e) => w.finish(i, Err(e), &mut ready).await,
            }
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                let (i, result) = joined.unwrap_or_else(|e| (usize::MAX, Err(StepError::failed(format!("step task panicked: {e}")))));
                if i != usize::MAX {
                    w.finish(i, result, &mut ready).await;
                }
            }
            changed = signals.changed(), if signals_open => {
                if changed.is_err() {
                    signals_open = false;
                } else if let Some(reason) = *signals.borrow() {
                    w.escalate(reason);
                }
            }
        }
    }
    if let Some((node, restart)) = w.restart.take() {
        w.emit(EventKind::RunRestarting { node, reason: restart.reason.clone() }).await;
        return RunOutcome {
            restart: Some(restart),
            status: RunStatus::Succeeded,
            duration: start.elapsed(),
            nodes: w.outcomes(),
            critical_path: Vec::new(),
            critical_path_duration: Duration::ZERO,
        };
    }
    let stopped = *w.stop.borrow();
    for i in 0..w.nodes.len() {
        if w.nodes[i].status.is_none() {
            let reason = match stopped {
                Some(StopReason::Abort) => "not started: the run stopped at the first failure (--fail-fast)",
                _ => "not started: the run was interrupted",
            };
            w.set_done(i, Status::Cancelled, Some(reason.to_string())).await;
        }
    }
    let (critical_path, critical_path_duration) = w.critical_path();
    let interrupted = matches!(stopped, Some(StopReason::Interrupt | StopReason::Kill));
    let failed = w.nodes.iter().any(|n| !n.status.is_some_and(Status::is_success));
    let status = if interrupted {
        RunStatus::Interrupted
    } else if failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    let duration = start.elapsed();
    w.emit(EventKind::RunFinished {
        status,
        duration_ms: duration,
        critical_path: critical_path.clone(),
        critical_path_ms: critical_path_duration,
    })
    .await;
    RunOutcome { restart: None, status, duration, nodes: w.outcomes(), critical_path, critical_path_duration }
}

struct Walker<'p> {
    plan: &'p Plan,
    catalog: Arc<dyn Catalog>,
    options: WalkOptions,
    events: mpsc::Sender<Event>,
    nodes: Vec<Node>,
    by_id: HashMap<Arc<str>, usize>,
    stop: watch::Sender<Option<StopReason>>,
    /// A node asked to restart from a new definition: nothing more starts.
    restart: Option<(String, crate::step::Restart)>,
}

impl<'p> Walker<'p> {
    fn new(plan: &'p Plan, catalog: Arc<dyn Catalog>, options: WalkOptions, events: mpsc::Sender<Event>) -> Self {
        let g = &plan.graph;
        let mut nodes: Vec<Node> = g
            .node_indices()
            .map(|n| Node {
                id: Arc::from(g[n].id.as_str()),
                step: g[n].step,
                part: g[n].part.clone(),
                needs: Vec::new(),
                dependents: Vec::new(),
                pending: 0,
                status: None,
                error: None,
                outputs: Arc::clone(&NO_OUTPUTS),
                workspace: None,
                started: None,
                duration: Duration::ZERO,
                fingerprint: None,
            })
            .collect();
        for e in g.raw_edges() {
            let (from, to) = (e.source().index(), e.target().index());
            nodes[from].dependents.push(to);
            nodes[to].needs.push(from);
            nodes[to].pending += 1;
        }
        for n in &mut nodes {
            n.needs.sort_unstable();
        }
        let by_id = nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();
        let (stop, _) = watch::channel(None);
        Walker { plan, catalog, options, events, nodes, by_id, stop, restart: None }
    }

    async fn emit(&self, kind: EventKind) {
        let _ = self.events.send(Event::now(kind)).await;
    }

    fn escalate(&self, reason: StopReason) {
        self.stop.send_if_modified(|s| {
            if Some(reason) > *s {
                *s = Some(reason);
                true
            } else {
                false
            }
        });
    }

    fn outcomes(&self) -> Vec<NodeOutcome> {
        self.nodes
            .iter()
            .map(|n| NodeOutcome {
                id: n.id.to_string(),
                status: n.status.unwrap_or(Status::Cancelled),
                duration: n.duration,
                error: n.error.clone(),
            })
            .collect()
    }

    fn settings(&self, step: usize) -> &StepSettings {
        &self.plan.pipeline.settings[step]
    }

    /// Resolve the node's step, build its context and spawn it.
    /// `Ok(Some(_))`: the node is up to date and did not start.
    async fn start(&mut self, i: usize, tasks: &mut JoinSet<Finished>) -> Result<Option<NodeSuccess>, StepError> {
        let node = &self.nodes[i];
        let step_index = node.step;
        let plan: &'p Plan = self.plan;
        let written = &plan.pipeline.loaded.pipeline.steps[step_index];
        let resolve = plan.pipeline.has_refs[step_index] && self.catalog.resolves_fields(written);
        // Borrowed as written unless something needs substituting.
        let step: std::borrow::Cow<'p, Step> = if resolve {
            std::borrow::Cow::Owned(self.resolve(i, written)?)
        } else {
            std::borrow::Cow::Borrowed(written)
        };
        let runner = self.catalog.runner(&step)?;
        let defaults = &self.plan.pipeline.loaded.pipeline.defaults;
        let mut env = BTreeMap::new();
        for &n in &node.needs {
            env.extend(self.nodes[n].outputs.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let defaults_env = if self.plan.pipeline.has_refs[step_index] {
            let mut missing = Vec::new();
            let lookup = self.lookup(i);
            let resolved: Vec<_> =
                defaults.env.iter().map(|(k, v)| (k.clone(), subst::render(v, &lookup, &mut missing))).collect();
            resolved
        } else {
            defaults.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        env.extend(defaults_env);
        env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // A node works in the workspace of its first need that has one (passed down from the Source).
        let inherited = node.needs.iter().find_map(|&n| self.nodes[n].workspace.clone());
        let workspace = inherited.as_deref().cloned().unwrap_or_else(|| self.options.base_dir.clone());
        let settings = self.settings(step_index).clone();
        let working_dir = match step.working_dir.as_deref().or(settings.working_dir.as_deref()) {
            Some(dir) => workspace.join(dir),
            None => workspace.clone(),
        };
        let force = self.options.force.applies(&node.id, &step.id);
        if self.options.fingerprints.is_some() {
            let mut fp = Fingerprint::default();
            fp.add("step", &serde_json::to_vec(&step).unwrap_or_default());
            fp.add("env", &serde_json::to_vec(&env).unwrap_or_default());
            for &n in &node.needs {
                fp.add(&self.nodes[n].id, self.nodes[n].fingerprint.as_deref().unwrap_or("-").as_bytes());
            }
            if !step.inputs.is_empty() {
                fp.add_inputs(&workspace, &step.inputs).map_err(StepError::invalid)?;
            }
            let fp = fp.finish();
            let last = self.options.fingerprints.as_ref().and_then(|f| f.nodes.get(&*node.id));
            if step.incremental && !force {
                if let Some(last) = last.filter(|l| l.fingerprint == fp) {
                    let success = NodeSuccess {
                        status: Some(Status::UpToDate),
                        outputs: last.outputs.clone(),
                        workspace: last.workspace.clone(),
                        ..Default::default()
                    };
                    self.nodes[i].fingerprint = Some(fp);
                    self.nodes[i].workspace = inherited;
                    return Ok(Some(success));
                }
            }
            self.nodes[i].fingerprint = Some(fp);
        }
        let node = &self.nodes[i];
        let file_stem = node_file_stem(&node.id);
        let ctx = NodeContext {
            run_id: self.options.run_id.clone(),
            pipeline: self.plan.pipeline.loaded.pipeline.name.clone(),
            node: node.id.to_string(),
            step: step.id.clone(),
            part: node.part.clone(),
            attempt: 1,
            workspace,
            working_dir,
            env,
            run_dir: self.options.run_dir.clone(),
            state_dir: self.options.state_dir.clone(),
            output_file: self.options.run_dir.join(format!("{}.outputs", file_stem.display())),
            timeout: settings.timeout,
            // Replaced at each attempt by one that also carries the node's own stop (timeout).
            stop: StopSignal::new(self.stop.subscribe(), self.stop.subscribe()),
            events: EventSink::new(&node.id, self.events.clone()),
            force,
            approvals: self.options.approvals.clone(),
        };
        let id = node.id.to_string();
        self.nodes[i].workspace = inherited;
        self.nodes[i].started = Some(Instant::now());
        self.emit(EventKind::NodeStarted { node: id, attempt: 1 }).await;
        tracing::debug!(node = %self.nodes[i].id, "node started");
        let run_stop = self.stop.subscribe();
        // The context goes boxed: a smaller task is cheaper to allocate and move for every node.
        let ctx = Box::new(ctx);
        tasks.spawn(async move { (i, attempts(runner, ctx, settings, run_stop).await) });
        Ok(None)
    }

    fn lookup(&self, _i: usize) -> NodeValues<'_> {
        NodeValues { env: &self.options.env, nodes: &self.nodes, by_id: &self.by_id }
    }

    /// The step with every `${...}` substituted, as this node sees it.
    fn resolve(&self, i: usize, step: &Step) -> Result<Step, StepError> {
        let mut value = serde_json::to_value(step).map_err(|e| StepError::invalid(e.to_string()))?;
        let mut missing = Vec::new();
        let lookup = self.lookup(i);
        subst::for_each_string(&mut value, &mut |s| {
            if s.contains("${") {
                *s = subst::render(s, &lookup, &mut missing);
            }
        });
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            let list: Vec<String> = missing.iter().map(Missing::to_string).collect();
            return Err(StepError::invalid(format!("cannot resolve the step's fields: {}", list.join("; "))));
        }
        serde_json::from_value(value).map_err(|e| StepError::invalid(e.to_string()))
    }

    async fn finish(&mut self, i: usize, result: Result<NodeSuccess, StepError>, ready: &mut VecDeque<usize>) {
        if let Some(started) = self.nodes[i].started {
            self.nodes[i].duration = started.elapsed();
        }
        match result {
            Ok(success) => {
                let status = success.status.unwrap_or(Status::Succeeded);
                if !success.expansion.is_empty() {
                    self.splice(i, &success.expansion).await;
                }
                if let Some(restart) = success.restart {
                    self.restart.get_or_insert((self.nodes[i].id.to_string(), restart));
                }
                let node = &mut self.nodes[i];
                node.outputs = Arc::new(success.outputs);
                if let Some(w) = success.workspace {
                    node.workspace = Some(Arc::new(w));
                }
                let incremental = self.plan.pipeline.loaded.pipeline.steps[node.step].incremental;
                if let (Some(store), Some(fp), true) =
                    (self.options.fingerprints.as_mut(), &node.fingerprint, incremental)
                {
                    let last = LastSuccess {
                        fingerprint: fp.clone(),
                        outputs: (*node.outputs).clone(),
                        workspace: node.workspace.as_deref().cloned(),
                    };
                    if let Err(e) = store.record(&node.id, last) {
                        tracing::warn!("cannot record the fingerprint of {}: {e}", node.id);
                    }
                }
                self.set_done(i, status, None).await;
                for d in self.nodes[i].dependents.clone() {
                    let dep = &mut self.nodes[d];
                    dep.pending -= 1;
                    if dep.pending == 0 && dep.status.is_none() {
                        ready.push_back(d);
                    }
                }
            }
            Err(e) => {
                let status = match e.kind {
                    StepErrorKind::Stopped(StopReason::Abort | StopReason::Interrupt | StopReason::Kill) => {
                        Status::Cancelled
                    }
                    _ => Status::Failed,
                };
                let id = self.nodes[i].id.clone();
                // Mark the failure and everything downstream before anything else is released.
                self.nodes[i].status = Some(status);
                let mut stack = self.nodes[i].dependents.clone();
                let mut downstream = Vec::new();
                while let Some(d) = stack.pop() {
                    if self.nodes[d].status.is_none() {
                        self.nodes[d].status = Some(Status::Skipped);
                        downstream.push(d);
                        stack.extend(self.nodes[d].dependents.iter().copied());
                    }
                }
                self.nodes[i].status = None;
                self.set_done(i, status, Some(e.message)).await;
                downstream.sort_unstable();
                for d in downstream {
                    self.nodes[d].status = None;
                    let reason = format!(
                        "not run: it needs `{id}`, which {}",
                        if status == Status::Failed { "failed" } else { "was cancelled" }
                    );
                    self.set_done(d, Status::Skipped, Some(reason)).await;
                }
                if status == Status::Failed && self.options.fail_fast {
                    self.escalate(StopReason::Abort);
                }
            }
        }
    }

    async fn set_done(&mut self, i: usize, status: Status, error: Option<String>) {
        let node = &mut self.nodes[i];
        tracing::debug!(node = %node.id, %status, duration_ms = node.duration.as_millis() as u64, "node finished");
        node.status = Some(status);
        node.error = error.clone();
        let outputs = if status.is_success() { (*node.outputs).clone() } else { BTreeMap::new() };
        let workspace = if status.is_success() { node.workspace.as_deref().cloned() } else { None };
        let kind = EventKind::NodeFinished {
            node: node.id.to_string(),
            status,
            duration_ms: node.duration,
            outputs,
            error,
            workspace,
        };
        self.emit(kind).await;
    }

    /// Add the parts a node expanded into: they run after it, and its dependents wait for them too.
    async fn splice(&mut self, i: usize, parts: &[crate::step::Part]) {
        let first = self.nodes.len();
        let step = self.nodes[i].step;
        let step_def = &self.plan.pipeline.loaded.pipeline.steps[step];
        let dependents = self.nodes[i].dependents.clone();
        let names: HashMap<&str, usize> = parts.iter().enumerate().map(|(k, p)| (p.name.as_str(), first + k)).collect();
        let mut infos = Vec::new();
        for p in parts {
            let id: Arc<str> = Arc::from(format!("{}/{}", self.nodes[i].id, p.name).as_str());
            let mut needs = vec![i];
            needs.extend(p.needs.iter().filter_map(|n| names.get(n.as_str()).copied()));
            // Counts the expanding node too: its own release below lets the parts start.
            let pending = needs.len();
            infos.push(NodeInfo {
                id: id.to_string(),
                step: step_def.id.clone(),
                kind: step_def.kind.name().to_string(),
                needs: needs
                    .iter()
                    .map(|&n| {
                        if n < first {
                            self.nodes[n].id.to_string()
                        } else {
                            format!("{}/{}", self.nodes[i].id, parts[n - first].name)
                        }
                    })
                    .collect(),
                description: self.catalog.describe(step_def, Some(&p.name)),
            });
            self.by_id.insert(id.clone(), self.nodes.len());
            self.nodes.push(Node {
                id,
                step,
                part: Some(p.name.clone()),
                needs,
                dependents: dependents.clone(),
                pending,
                status: None,
                error: None,
                outputs: Arc::clone(&NO_OUTPUTS),
                workspace: None,
                started: None,
                duration: Duration::ZERO,
                fingerprint: None,
            });
        }
        for k in first..self.nodes.len() {
            for n in self.nodes[k].needs.clone() {
                if n >= first {
                    self.nodes[n].dependents.push(k);
                }
            }
        }
        let end = self.nodes.len();
        for &d in &dependents {
            self.nodes[d].pending += parts.len();
            self.nodes[d].needs.extend(first..end);
        }
        self.nodes[i].dependents.extend(first..end);
        self.emit(EventKind::NodesAdded { node: self.nodes[i].id.to_string(), nodes: infos }).await;
    }

    /// The chain of nodes whose durations add up to the longest, and that length.
    fn critical_path(&self) -> (Vec<String>, Duration) {
        let n = self.nodes.len();
        let mut indegree: Vec<usize> = self.nodes.iter().map(|x| x.needs.len()).collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut best = vec![Duration::ZERO; n];
        let mut prev = vec![usize::MAX; n];
        while let Some(i) = queue.pop_front() {
            let longest_need =
                self.nodes[i].needs.iter().map(|&m| (best[m], m)).max_by_key(|(d, m)| (*d, std::cmp::Reverse(*m)));
            if let Some((d, m)) = longest_need {
                best[i] = d;
                prev[i] = m;
            }
            best[i] += self.nodes[i].duration;
            for &d in &self.nodes[i].dependents {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    queue.push_back(d);
                }
            }
        }
        let Some(end) = (0..n).max_by_key(|&i| (best[i], std::cmp::Reverse(i))) else {
            return (Vec::new(), Duration::ZERO);
        };
        let mut path = vec![end];
        while prev[*path.last().unwrap()] != usize::MAX {
            path.push(prev[*path.last().unwrap()]);
        }
        path.reverse();
        (path.into_iter().map(|i| self.nodes[i].id.to_string()).collect(), best[end])
    }
}

/// Values `${...}` resolves against while walking.
struct NodeValues<'a> {
    env: &'a HashMap<String, String>,
    nodes: &'a [Node],
    by_id: &'a HashMap<Arc<str>, usize>,
}

impl subst::Lookup for NodeValues<'_> {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn output(&self, node: &str, key: &str) -> Option<String> {
        let &i = self.by_id.get(node)?;
        self.nodes[i].outputs.get(key).cloned()
    }
}

/// A node id as a relative file path: parts of expanded steps go in a folder named after the step.
pub fn node_file_stem(id: &str) -> PathBuf {
    id.split('/').collect()
}

/// Run a node's attempts: timeout per attempt, retries with doubling backoff, stop signals honoured.
async fn attempts(
    runner: Box<dyn StepRunner>,
    mut ctx: Box<NodeContext>,
    settings: StepSettings,
    run_stop: watch::Receiver<Option<StopReason>>,
) -> Result<NodeSuccess, StepError> {
    let mut attempt = 1;
    loop {
        ctx.attempt = attempt;
        if attempt > 1 {
            // A fresh run directory holds no outputs; a retry must not see the failed attempt's.
            let _ = std::fs::remove_file(&ctx.output_file);
        }
        let (node_stop, node_rx) = watch::channel(None);
        ctx.stop = StopSignal::new(run_stop.clone(), node_rx);
        let result = run_attempt(runner.as_ref(), &ctx, &node_stop).await;
        let retryable = match &result {
            Ok(_) => return result,
            Err(e) => matches!(e.kind, StepErrorKind::Failed | StepErrorKind::Stopped(StopReason::Timeout)),
        };
        if !retryable || attempt > settings.retries || run_stop.borrow().is_some() {
            return result;
        }
        let delay = settings.retry_backoff.saturating_mul(1u32 << (attempt - 1).min(16));
        let reason = result.err().map(|e| e.message).unwrap_or_default();
        attempt += 1;
        let ev =
            EventKind::NodeRetrying { node: ctx.node.clone(), attempt, delay_ms: delay.as_millis() as u64, reason };
        let _ = ctx.events_sender().send(Event::now(ev)).await;
        let mut stop = ctx.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            reason = stop.stronger_than(Some(StopReason::Timeout)) => {
                return Err(StepError::stopped(reason, "stopped while waiting to retry"));
            }
        }
        let _ = ctx.events_sender().send(Event::now(EventKind::NodeStarted { node: ctx.node.clone(), attempt })).await;
    }
}

async fn run_attempt(
    runner: &dyn StepRunner,
    ctx: &NodeContext,
    node_stop: &watch::Sender<Option<StopReason>>,
) -> Result<NodeSuccess, StepError> {
    let Some(timeout) = ctx.timeout else {
        return runner.run(ctx).await;
    };
    let fut = runner.run(ctx);
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => r,
        _ = tokio::time::sleep(timeout) => {
            node_stop.send_replace(Some(StopReason::Timeout));
            let ended = tokio::time::timeout(STOP_GRACE, &mut fut).await;
            let detail = match ended {
                Ok(Err(e)) if !matches!(e.kind, StepErrorKind::Stopped(_)) => format!(" ({e})"),
                _ => String::new(),
            };
            Err(StepError::stopped(StopReason::Timeout, format!("timed out after {}{detail}", humantime::format_duration(timeout))))
        }
    }
}

impl NodeContext {
    fn events_sender(&self) -> mpsc::Sender<Event> {
        self.events.sender()
    }
}

/// Where a run's files go: `<state>/runs/<run-id>`.
pub fn run_dir(state_dir: &Path, run_id: &str) -> PathBuf {
    state_dir.join("runs").join(run_id)
}
