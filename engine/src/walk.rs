//! The walker: runs every node whose needs are met, at most `jobs` at a time, on tokio. It only emits events;
//! it never prints. A failed node skips everything downstream (marked before anything else is released); a stop
//! (fail-fast abort, Ctrl-C, a second Ctrl-C) only ever escalates.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
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
    /// The Parameter Store values `${ssm:...}` reads (read when the run started).
    pub store: Arc<subst::StoreValues>,
    /// Secrets (SecureString values) masked in outputs, errors and output files.
    pub redactor: Arc<crate::redact::Redactor>,
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
            store: Arc::default(),
            redactor: Arc::default(),
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

/// A node done in an earlier attempt of this run (or, for `runner run --only`, in an earlier run).
#[derive(Debug, Clone, Default)]
pub struct Reused {
    pub outputs: Outputs,
    pub workspace: Option<PathBuf>,
    /// Where it was done, for its log: `None` says "in the interrupted run".
    pub from: Option<String>,
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
    pub id: Arc<str>,
    pub status: Status,
    pub duration: Duration,
    pub error: Option<String>,
}

/// What the walker knows of one node while it walks. Kept to 64 bytes: a walk of 100k steps holds 100k of them.
/// What few nodes have is kept beside: edges in [`Edges`], errors and fingerprints in maps of the [`Walker`].
struct Node {
    /// Shared with the plan node and the `RunStarted` event.
    id: Arc<str>,
    outputs: Arc<Outputs>,
    workspace: Option<Arc<PathBuf>>,
    duration: Duration,
    step: u32,
    /// Needs not finished yet.
    pending: u32,
    status: Option<Status>,
}

impl Node {
    fn new(id: Arc<str>, step: usize, pending: usize) -> Node {
        Node {
            id,
            outputs: Arc::clone(&NO_OUTPUTS),
            workspace: None,
            duration: Duration::ZERO,
            step: step as u32,
            pending: pending as u32,
            status: None,
        }
    }
}

/// One direction of the walk's edges (needs, or dependents): the plan's in one flat array indexed by node, in
/// ascending order, plus those spliced in at run time. Two small vectors per node would cost ~100 bytes more.
#[derive(Default)]
struct Edges {
    /// Node i's plan edges are `to[at[i]..at[i + 1]]`.
    at: Vec<u32>,
    to: Vec<u32>,
    /// Edges added at run time, after the plan's (spliced nodes have higher indices: the order stays ascending).
    added: HashMap<usize, Vec<usize>>,
}

impl Edges {
    /// From (from, to) pairs of `nodes` plan nodes.
    fn new(nodes: usize, pairs: impl Iterator<Item = (usize, usize)> + Clone) -> Edges {
        let mut at = vec![0u32; nodes + 1];
        for (from, _) in pairs.clone() {
            at[from + 1] += 1;
        }
        for k in 0..nodes {
            at[k + 1] += at[k];
        }
        let mut to = vec![0u32; at[nodes] as usize];
        let mut next = at.clone();
        for (from, t) in pairs {
            to[next[from] as usize] = t as u32;
            next[from] += 1;
        }
        for k in 0..nodes {
            to[at[k] as usize..at[k + 1] as usize].sort_unstable();
        }
        Edges { at, to, added: HashMap::new() }
    }

    /// Node i's edges from the plan (none for a spliced node).
    fn planned(&self, i: usize) -> &[u32] {
        match (self.at.get(i), self.at.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.to[a as usize..b as usize],
            _ => &[],
        }
    }

    fn of(&self, i: usize) -> impl Iterator<Item = usize> + Clone + '_ {
        self.planned(i).iter().map(|&n| n as usize).chain(self.added.get(&i).into_iter().flatten().copied())
    }

    fn count(&self, i: usize) -> usize {
        self.planned(i).len() + self.added.get(&i).map_or(0, Vec::len)
    }

    fn add(&mut self, i: usize, more: impl IntoIterator<Item = usize>) {
        self.added.entry(i).or_default().extend(more);
    }
}

/// Nodes started in a row before finished tasks are taken in.
const REAP_EVERY: usize = 32;

/// Every node starts with no outputs: one shared empty map, not one allocation per node.
static NO_OUTPUTS: std::sync::LazyLock<Arc<Outputs>> = std::sync::LazyLock::new(Arc::default);

/// A node's task ended: its index, how long it ran, and how.
type Finished = (usize, Duration, Result<NodeSuccess, StepError>);

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
        let line = match &r.from {
            Some(from) => format!("done {from}: reused"),
            None => "done in the interrupted run: reused".to_string(),
        };
        w.emit(EventKind::Log { node: w.nodes[i].id.to_string(), stream: Stream::Runner, line }).await;
        let success = NodeSuccess {
            status: Some(Status::UpToDate),
            outputs: r.outputs,
            workspace: r.workspace,
            ..Default::default()
        };
        w.finish(i, Duration::ZERO, Ok(success), &mut ready).await;
    }
    // Every node now free to start, in plan order (the reused nodes' releases included).
    ready.clear();
    ready.extend((0..w.nodes.len()).filter(|&i| w.nodes[i].pending == 0 && w.nodes[i].status.is_none()));
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut signals_open = true;
    loop {
        let mut started = 0;
        while w.stop.borrow().is_none() && w.restart.is_none() && (w.options.jobs == 0 || tasks.len() < w.options.jobs)
        {
            let Some(i) = ready.pop_front() else { break };
            match w.start(i, &mut tasks).await {
                Ok(None) => {}
                Ok(Some(up_to_date)) => w.finish(i, Duration::ZERO, Ok(up_to_date), &mut ready).await,
                Err(e) => w.finish(i, Duration::ZERO, Err(e), &mut ready).await,
            }
            started += 1;
            if started == REAP_EVERY {
                break;
            }
        }
        // Take in what has already finished without waiting, so that with many nodes ready at once (a wide
        // fan-out with unlimited jobs) finished tasks are not all kept until the last one is spawned.
        if started == REAP_EVERY {
            while let Some(joined) = tasks.try_join_next() {
                w.joined(joined, &mut ready).await;
            }
            if signals_open && signals.has_changed().unwrap_or(false) {
                if let Some(reason) = *signals.borrow_and_update() {
                    w.escalate(reason);
                }
            }
            continue;
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            Some(joined) = tasks.join_next() => w.joined(joined, &mut ready).await,
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
            nodes: w.take_outcomes(),
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
            w.set_done(i, Status::Cancelled, Some(reason.into())).await;
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
    RunOutcome { restart: None, status, duration, nodes: w.take_outcomes(), critical_path, critical_path_duration }
}

struct Walker<'p> {
    plan: &'p Plan,
    catalog: Arc<dyn Catalog>,
    options: WalkOptions,
    events: mpsc::Sender<Event>,
    nodes: Vec<Node>,
    needs: Edges,
    dependents: Edges,
    /// Why nodes did not succeed.
    errors: HashMap<usize, Box<str>>,
    /// When fingerprints are kept: what each started node's result depends on.
    fingerprints: HashMap<usize, Box<str>>,
    /// Node index by id, built the first time a `${steps...}` reference is resolved.
    by_id: Option<HashMap<Arc<str>, usize>>,
    stop: watch::Sender<Option<StopReason>>,
    /// A node asked to restart from a new definition: nothing more starts.
    restart: Option<(String, crate::step::Restart)>,
    /// What parts spliced in at run time provide (published assets), by node.
    provides: HashMap<usize, Vec<String>>,
    /// Providers a node that expands when it runs did not wait for: its parts wait for those they consume.
    deferred: HashMap<usize, Vec<usize>>,
    /// By step: whether its fields refer to outputs of other steps.
    output_refs: HashMap<usize, bool>,
}

impl<'p> Walker<'p> {
    fn new(plan: &'p Plan, catalog: Arc<dyn Catalog>, options: WalkOptions, events: mpsc::Sender<Event>) -> Self {
        let g = &plan.graph;
        let edges = g.raw_edges().iter().map(|e| (e.source().index(), e.target().index()));
        let dependents = Edges::new(g.node_count(), edges.clone());
        let needs = Edges::new(g.node_count(), edges.map(|(from, to)| (to, from)));
        let nodes: Vec<Node> =
            g.node_indices().map(|n| Node::new(g[n].id.clone(), g[n].step, needs.count(n.index()))).collect();
        let (stop, _) = watch::channel(None);
        Walker {
            plan,
            catalog,
            options,
            events,
            nodes,
            needs,
            dependents,
            errors: HashMap::new(),
            fingerprints: HashMap::new(),
            by_id: None,
            stop,
            restart: None,
            provides: HashMap::new(),
            deferred: HashMap::new(),
            output_refs: HashMap::new(),
        }
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

    /// A finished task taken in.
    async fn joined(&mut self, joined: Result<Finished, tokio::task::JoinError>, ready: &mut VecDeque<usize>) {
        match joined {
            Ok((i, duration, result)) => self.finish(i, duration, result, ready).await,
            Err(e) => tracing::error!("step task panicked: {e}"),
        }
    }

    /// How each node ended; the nodes become their outcomes in place.
    fn take_outcomes(&mut self) -> Vec<NodeOutcome> {
        std::mem::take(&mut self.nodes)
            .into_iter()
            .enumerate()
            .map(|(i, n)| NodeOutcome {
                id: n.id,
                status: n.status.unwrap_or(Status::Cancelled),
                duration: n.duration,
                error: self.errors.remove(&i).map(String::from),
            })
            .collect()
    }

    /// Resolve the node's step, build its context and spawn it.
    /// `Ok(Some(_))`: the node is up to date and did not start.
    async fn start(&mut self, i: usize, tasks: &mut JoinSet<Finished>) -> Result<Option<NodeSuccess>, StepError> {
        let step_index = self.nodes[i].step as usize;
        let plan: &'p Plan = self.plan;
        let written = &plan.pipeline.loaded.pipeline.steps[step_index];
        let resolve = plan.pipeline.has_refs[step_index] && self.catalog.resolves_fields(written);
        if plan.pipeline.has_refs[step_index] && self.by_id.is_none() {
            self.by_id = Some(self.nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect());
        }
        // Borrowed as written unless something needs substituting.
        let step: std::borrow::Cow<'p, Step> = if resolve {
            std::borrow::Cow::Owned(self.resolve(i, written)?)
        } else {
            std::borrow::Cow::Borrowed(written)
        };
        let runner = self.catalog.runner(&step)?;
        let defaults = &self.plan.pipeline.loaded.pipeline.defaults;
        let mut env = BTreeMap::new();
        for n in self.needs.of(i) {
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
        let inherited = self.needs.of(i).find_map(|n| self.nodes[n].workspace.clone());
        let workspace = inherited.as_deref().cloned().unwrap_or_else(|| self.options.base_dir.clone());
        let settings = self.plan.pipeline.settings(step_index);
        let working_dir = match step.working_dir.as_deref().or(settings.working_dir.as_deref()) {
            Some(dir) => workspace.join(dir),
            None => workspace.clone(),
        };
        let force = self.options.force.applies(&self.nodes[i].id, &step.id);
        if self.options.fingerprints.is_some() {
            let mut fp = Fingerprint::default();
            fp.add("step", &serde_json::to_vec(&step).unwrap_or_default());
            fp.add("env", &serde_json::to_vec(&env).unwrap_or_default());
            for n in self.needs.of(i) {
                fp.add(&self.nodes[n].id, self.fingerprints.get(&n).map_or("-", |f| &**f).as_bytes());
            }
            if !step.inputs.is_empty() {
                fp.add_inputs(&workspace, &step.inputs).map_err(StepError::invalid)?;
            }
            let fp = fp.finish();
            let last = self.options.fingerprints.as_ref().and_then(|f| f.nodes.get(&*self.nodes[i].id));
            if step.incremental && !force {
                if let Some(last) = last.filter(|l| l.fingerprint == fp) {
                    let success = NodeSuccess {
                        status: Some(Status::UpToDate),
                        outputs: last.outputs.clone(),
                        workspace: last.workspace.clone(),
                        ..Default::default()
                    };
                    self.fingerprints.insert(i, fp.into());
                    self.nodes[i].workspace = inherited;
                    return Ok(Some(success));
                }
            }
            self.fingerprints.insert(i, fp.into());
        }
        let node = &self.nodes[i];
        let file_stem = node_file_stem(&node.id);
        let ctx = NodeContext {
            run_id: self.options.run_id.clone(),
            pipeline: self.plan.pipeline.loaded.pipeline.name.clone(),
            node: node.id.to_string(),
            step: step.id.to_string(),
            part: crate::plan::part_of(&node.id).map(str::to_string),
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
            events: EventSink::new(node.id.clone(), self.events.clone()),
            force,
            approvals: self.options.approvals.clone(),
        };
        let id = node.id.to_string();
        self.nodes[i].workspace = inherited;
        self.emit(EventKind::NodeStarted { node: id, attempt: 1 }).await;
        tracing::debug!(node = %self.nodes[i].id, "node started");
        let run_stop = self.stop.subscribe();
        // The context goes boxed: a smaller task is cheaper to allocate and move for every node.
        let ctx = Box::new(ctx);
        tasks.spawn(async move {
            let started = Instant::now();
            // A panic in a step is a bug, but it fails that node (and skips what needs it) like any failure,
            // instead of leaving it to be reported as never started.
            let result = std::panic::AssertUnwindSafe(attempts(runner, ctx, settings, run_stop))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(StepError::failed(format!("the step panicked: {}", panic_text(&*panic)))));
            (i, started.elapsed(), result)
        });
        Ok(None)
    }

    fn lookup(&self, _i: usize) -> NodeValues<'_> {
        NodeValues {
            env: &self.options.env,
            store: &self.options.store,
            nodes: &self.nodes,
            by_id: self.by_id.as_ref(),
        }
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

    async fn finish(
        &mut self,
        i: usize,
        duration: Duration,
        result: Result<NodeSuccess, StepError>,
        ready: &mut VecDeque<usize>,
    ) {
        self.nodes[i].duration = duration;
        let result = self.redacted(i, result);
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
                let incremental = self.plan.pipeline.loaded.pipeline.steps[node.step as usize].incremental;
                if let (Some(store), Some(fp), true) =
                    (self.options.fingerprints.as_mut(), self.fingerprints.get(&i), incremental)
                {
                    let last = LastSuccess {
                        fingerprint: fp.to_string(),
                        outputs: (*node.outputs).clone(),
                        workspace: node.workspace.as_deref().cloned(),
                    };
                    if let Err(e) = store.record(&node.id, last) {
                        tracing::warn!("cannot record the fingerprint of {}: {e}", node.id);
                    }
                }
                self.set_done(i, status, None).await;
                for d in self.dependents.of(i) {
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
                let downstream = self.mark_skipped(self.dependents.of(i).collect());
                self.nodes[i].status = None;
                self.set_done(i, status, Some(e.message.into())).await;
                let what = if status == Status::Failed { "failed" } else { "was cancelled" };
                self.report_skipped(downstream, &id, what).await;
                if status == Status::Failed && self.options.fail_fast {
                    self.escalate(StopReason::Abort);
                }
            }
        }
    }

    /// A node's result with the run's secrets masked: what it outputs is recorded and shown, and so is its error.
    /// The file of its outputs is rewritten when it holds one.
    fn redacted(&self, i: usize, result: Result<NodeSuccess, StepError>) -> Result<NodeSuccess, StepError> {
        let redactor = &self.options.redactor;
        if redactor.is_empty() {
            return result;
        }
        let file = self.options.run_dir.join(format!("{}.outputs", node_file_stem(&self.nodes[i].id).display()));
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let std::borrow::Cow::Owned(clean) = redactor.redact(&text) {
                let _ = std::fs::write(&file, clean);
            }
        }
        match result {
            Ok(mut success) => {
                redactor.outputs(&mut success.outputs);
                Ok(success)
            }
            Err(mut e) => {
                redactor.scrub(&mut e.message);
                Err(e)
            }
        }
    }

    async fn set_done(&mut self, i: usize, status: Status, error: Option<Box<str>>) {
        let node = &mut self.nodes[i];
        tracing::debug!(node = %node.id, %status, duration_ms = node.duration.as_millis() as u64, "node finished");
        node.status = Some(status);
        if let Some(e) = &error {
            self.errors.insert(i, e.clone());
        }
        let node = &self.nodes[i];
        let outputs = if status.is_success() { (*node.outputs).clone() } else { BTreeMap::new() };
        let workspace = if status.is_success() { node.workspace.as_deref().cloned() } else { None };
        let kind = EventKind::NodeFinished {
            node: node.id.to_string(),
            status,
            duration_ms: node.duration,
            outputs,
            error: error.map(String::from),
            workspace,
        };
        self.emit(kind).await;
    }

    /// Add the parts a node expanded into: they run after it, and its dependents wait for them too. Two
    /// refinements for parts that say what they provide and consume (assets, and the stacks that use them, as
    /// `cdk deploy` orders them): a dependent that expands when it runs does not wait for the parts here that
    /// provide something (it only reads its manifest), and its own parts then wait for the providers of what they
    /// consume. So a stack starts once its template and assets are published, not once the whole Publish is done.
    async fn splice(&mut self, i: usize, parts: &[crate::step::Part]) {
        let first = self.nodes.len();
        let end = first + parts.len();
        let step = self.nodes[i].step as usize;
        let plan: &'p Plan = self.plan;
        let step_def = &plan.pipeline.loaded.pipeline.steps[step];
        let dependents: Vec<usize> = self.dependents.of(i).collect();
        let deferring: Vec<bool> = dependents.iter().map(|&d| self.defers(d)).collect();
        // Providers an earlier splice left for this node's parts to wait for, as they need.
        let deferred = self.deferred.remove(&i).unwrap_or_default();
        let names: HashMap<&str, usize> = parts.iter().enumerate().map(|(k, p)| (p.name.as_str(), first + k)).collect();
        let mut infos = Vec::new();
        let mut blocked = Vec::new();
        let step_id: Arc<str> = Arc::from(step_def.id.as_str());
        let ids: Vec<Arc<str>> = parts.iter().map(|p| Arc::from(format!("{}/{}", self.nodes[i].id, p.name))).collect();
        for (k, p) in parts.iter().enumerate() {
            let id = ids[k].clone();
            let mut needs = vec![i];
            needs.extend(p.needs.iter().filter_map(|n| names.get(n.as_str()).copied()));
            let waits: Vec<usize> = deferred
                .iter()
                .copied()
                .filter(|q| match &p.consumes {
                    None => true,
                    Some(c) => self.provides.get(q).is_some_and(|provided| provided.iter().any(|x| c.contains(x))),
                })
                .collect();
            // Counts the expanding node too: its own release below lets the parts start.
            let pending = needs.len() + waits.iter().filter(|&&q| self.nodes[q].status.is_none()).count();
            if let Some(&q) = waits.iter().find(|&&q| self.nodes[q].status.is_some_and(|s| !s.is_success())) {
                blocked.push((first + k, q));
            }
            infos.push(NodeInfo {
                id: id.clone(),
                step: step_id.clone(),
                kind: step_def.kind.name(),
                needs: needs
                    .iter()
                    .chain(&waits)
                    .map(|&n| if n < first { self.nodes[n].id.clone() } else { ids[n - first].clone() })
                    .collect(),
                // Described by the step that expanded, from its resolved fields.
                description: Arc::from(p.description.as_str()),
            });
            if let Some(by_id) = self.by_id.as_mut() {
                by_id.insert(id.clone(), self.nodes.len());
            }
            let k = self.nodes.len();
            self.nodes.push(Node::new(id, step, pending));
            for &n in &needs {
                if n >= first {
                    self.dependents.add(n, [k]);
                }
            }
            for &q in &waits {
                if self.nodes[q].status.is_none() {
                    self.dependents.add(q, [k]);
                }
            }
            needs.extend(waits);
            self.needs.add(k, needs);
            if p.provides.is_empty() {
                self.dependents.add(k, dependents.iter().copied());
            } else {
                self.provides.insert(k, p.provides.clone());
                for (&d, &defers) in dependents.iter().zip(&deferring) {
                    if defers {
                        self.deferred.entry(d).or_default().push(k);
                    } else {
                        self.dependents.add(k, [d]);
                    }
                }
            }
        }
        for (&d, &defers) in dependents.iter().zip(&deferring) {
            let waited: Vec<usize> = (first..end).filter(|&k| !(defers && self.provides.contains_key(&k))).collect();
            self.nodes[d].pending += waited.len() as u32;
            self.needs.add(d, waited);
        }
        self.dependents.add(i, first..end);
        self.emit(EventKind::NodesAdded { node: self.nodes[i].id.to_string(), nodes: infos }).await;
        for (k, q) in blocked {
            let failed = self.nodes[q].status == Some(Status::Failed);
            let cause = self.nodes[q].id.clone();
            self.skip_from(k, &cause, failed).await;
        }
    }

    /// Whether node `d` expands when it runs and reads nothing its needs' parts make: then it need not wait for
    /// the parts that provide something (its own parts will, for what they consume). A step whose fields refer to
    /// outputs of other steps waits for everything, as they may be those parts'.
    fn defers(&mut self, d: usize) -> bool {
        let plan: &'p Plan = self.plan;
        if d >= plan.graph.node_count() || self.nodes[d].status.is_some() {
            return false;
        }
        if !plan.graph[petgraph::graph::NodeIndex::new(d)].expands_at_run_time {
            return false;
        }
        let step = self.nodes[d].step as usize;
        let refers = *self.output_refs.entry(step).or_insert_with(|| {
            serde_json::to_string(&plan.pipeline.loaded.pipeline.steps[step]).is_ok_and(|t| t.contains("${steps."))
        });
        !refers
    }

    /// Mark node `k` and everything downstream of it skipped: it needs `cause`, which did not succeed.
    async fn skip_from(&mut self, k: usize, cause: &str, failed: bool) {
        let downstream = self.mark_skipped(vec![k]);
        self.report_skipped(downstream, cause, if failed { "failed" } else { "did not run" }).await;
    }

    /// Mark `from` and everything downstream of them skipped (before anything else is released), in node order;
    /// nodes already finished or marked are left as they are.
    fn mark_skipped(&mut self, from: Vec<usize>) -> Vec<usize> {
        let mut stack = from;
        let mut downstream = Vec::new();
        while let Some(d) = stack.pop() {
            if self.nodes[d].status.is_none() {
                self.nodes[d].status = Some(Status::Skipped);
                downstream.push(d);
                stack.extend(self.dependents.of(d));
            }
        }
        downstream.sort_unstable();
        downstream
    }

    /// Record and announce the nodes [`Self::mark_skipped`] marked: not run, as they need `cause`, which `what`.
    async fn report_skipped(&mut self, downstream: Vec<usize>, cause: &str, what: &str) {
        for d in downstream {
            self.nodes[d].status = None;
            let reason = format!("not run: it needs `{cause}`, which {what}");
            self.set_done(d, Status::Skipped, Some(reason.into())).await;
        }
    }

    /// The chain of nodes whose durations add up to the longest, and that length.
    fn critical_path(&self) -> (Vec<String>, Duration) {
        let n = self.nodes.len();
        // Who needs whom, from the needs alone: `dependents` leaves out a part spliced in at run time after what it
        // waits for had finished (nothing left to release), and the path then stopped at the step that expanded.
        let mut dependents = vec![Vec::new(); n];
        for i in 0..n {
            self.needs.of(i).for_each(|m| dependents[m].push(i));
        }
        let mut indegree: Vec<usize> = (0..n).map(|i| self.needs.count(i)).collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut best = vec![Duration::ZERO; n];
        let mut prev = vec![usize::MAX; n];
        while let Some(i) = queue.pop_front() {
            let longest_need = self.needs.of(i).map(|m| (best[m], m)).max_by_key(|(d, m)| (*d, std::cmp::Reverse(*m)));
            if let Some((d, m)) = longest_need {
                best[i] = d;
                prev[i] = m;
            }
            best[i] += self.nodes[i].duration;
            for &d in &dependents[i] {
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
    store: &'a subst::StoreValues,
    nodes: &'a [Node],
    by_id: Option<&'a HashMap<Arc<str>, usize>>,
}

impl subst::Lookup for NodeValues<'_> {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn output(&self, node: &str, key: &str) -> Option<String> {
        let &i = self.by_id?.get(node)?;
        self.nodes[i].outputs.get(key).cloned()
    }
    fn ssm(&self, r: subst::StoreRef) -> Option<String> {
        self.store.get(r).map(str::to_string)
    }
}

/// A node id as a relative file path: parts of expanded steps go in a folder named after the step. Any id gives a
/// path that stays inside the run directory and that the file system takes: a part named at run time (from a
/// cloud assembly) that is empty, `.` or `..` becomes `_`, and one longer than 200 bytes is cut and keeps a hash
/// of the whole (file names are at most 255 bytes, and `.codebuild.json` is added to it).
pub fn node_file_stem(id: &str) -> PathBuf {
    id.split('/')
        .map(|part| match part {
            "" | "." | ".." => "_".to_string(),
            long if long.len() > 200 => {
                let mut cut = 180;
                while !long.is_char_boundary(cut) {
                    cut -= 1;
                }
                let mut hash = crate::incremental::Fingerprint::default();
                hash.add("part", long.as_bytes());
                format!("{}-{}", &long[..cut], &hash.finish()[..16])
            }
            short => short.to_string(),
        })
        .collect()
}

/// What a panic said, when it said it with a string.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_node_id_is_a_file_path_inside_the_run_directory() {
        use std::path::Component;
        let long = "é".repeat(300);
        for id in ["a", "deploy/Stack", "p/..", "p/../../etc", "p//x", "/abs", &format!("p/{long}")] {
            let stem = super::node_file_stem(id);
            assert!(stem.components().all(|c| matches!(c, Component::Normal(_))), "{id}: {stem:?}");
            assert!(stem.iter().all(|c| c.len() <= 200), "{id}: {stem:?}");
        }
        assert_eq!(super::node_file_stem("deploy/Stack"), std::path::PathBuf::from("deploy/Stack"));
    }
}
