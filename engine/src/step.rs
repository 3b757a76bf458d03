//! The contract between the engine and the step kinds (implemented in the `steps` crate).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::event::{Event, EventKind, Status, Stream};
use crate::model::{Step, StepKind};

/// Outputs of a node: `KEY=VALUE`.
pub type Outputs = BTreeMap<String, String>;

/// How a step kind turns into graph nodes at plan time.
#[derive(Debug, Clone, PartialEq)]
pub enum Expansion {
    /// One node, id = the step's id.
    Single,
    /// Several nodes `<step>/<part>`, with needs among themselves (part names).
    Parts(Vec<Part>),
    /// One node now; its parts are only known when its inputs exist. It is expanded when it runs.
    AtRunTime,
}

/// One node of an expanded step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    /// Other parts of the same step it waits for.
    pub needs: Vec<String>,
    pub description: String,
    /// What the node makes for others (an asset published at `s3://bucket/key`). A node of a step that needs this
    /// one's step, and that says what it [`consumes`](Part::consumes), waits only for the nodes providing it.
    pub provides: Vec<String>,
    /// What the node uses of what its step's needs provide (a stack: its template and assets); `None`: it waits
    /// for everything its step needs, as any node does. Nodes that provide nothing are always waited for.
    pub consumes: Option<Vec<String>>,
}

/// What the planner tells a step kind.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// The directory the run starts in (workspace of steps with no Source upstream).
    pub base_dir: PathBuf,
}

/// The steps upstream of one step (what it needs, what those need, ...), nearest first, each once. Found as it is
/// iterated: planning a 100k-step pipeline must not walk every step's ancestry.
pub struct Upstream<'a> {
    steps: &'a [Step],
    index: &'a HashMap<&'a str, usize>,
    start: Option<usize>,
    queue: std::collections::VecDeque<usize>,
    seen: HashSet<usize>,
}

impl<'a> Upstream<'a> {
    /// The steps upstream of `steps[step]`; `index` maps step ids to positions.
    pub fn new(steps: &'a [Step], index: &'a HashMap<&'a str, usize>, step: usize) -> Self {
        Upstream { steps, index, start: Some(step), queue: Default::default(), seen: HashSet::new() }
    }

    fn push_needs(&mut self, of: usize) {
        for need in &self.steps[of].needs {
            if let Some(&n) = self.index.get(need.as_str()) {
                if self.seen.insert(n) {
                    self.queue.push_back(n);
                }
            }
        }
    }

    /// The position of the next step upstream.
    fn next_index(&mut self) -> Option<usize> {
        if let Some(start) = self.start.take() {
            self.seen.insert(start);
            self.push_needs(start);
        }
        let next = self.queue.pop_front()?;
        self.push_needs(next);
        Some(next)
    }

    /// Whether `steps[target]` is upstream (validation: an output reference must name a step that runs before).
    pub fn contains(mut self, target: usize) -> bool {
        std::iter::from_fn(|| self.next_index()).any(|n| n == target)
    }
}

impl<'a> Iterator for Upstream<'a> {
    type Item = &'a Step;

    fn next(&mut self) -> Option<&'a Step> {
        self.next_index().map(|n| &self.steps[n])
    }
}

/// The step kinds known to a build of `runner`.
pub trait Catalog: Send + Sync {
    /// Kind-specific problems, as (path relative to the step's `kind`, e.g. `commands[0]`, message).
    fn check(&self, kind: &StepKind) -> Vec<(String, String)>;
    /// One line saying what the step (or one of its parts) will do.
    fn describe(&self, step: &Step, part: Option<&str>) -> String;
    /// Nodes the step becomes at plan time; `upstream` walks the steps that run before it.
    fn expand(&self, step: &Step, ctx: &PlanContext, upstream: Upstream<'_>) -> Result<Expansion, String>;
    /// Whether the step's `${...}` are resolved before it runs (a Source replaced by a local checkout needs none).
    fn resolves_fields(&self, _step: &Step) -> bool {
        true
    }
    /// Something that runs the step, built from its fields after substitution.
    fn runner(&self, step: &Step) -> Result<Box<dyn StepRunner>, StepError>;
}

/// Runs one node of a step.
#[async_trait::async_trait]
pub trait StepRunner: Send + Sync {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError>;
}

/// Why a running node is asked to stop. Ordered: a stop only ever escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// Its timeout ran out.
    Timeout,
    /// Another node failed under `--fail-fast`.
    Abort,
    /// SIGINT/SIGTERM: terminate gracefully.
    Interrupt,
    /// A second signal: kill now.
    Kill,
}

/// What a node watches to know it must stop.
#[derive(Debug, Clone)]
pub struct StopSignal {
    run: watch::Receiver<Option<StopReason>>,
    node: watch::Receiver<Option<StopReason>>,
    /// Keeps the channel of [`StopSignal::never`] open (a closed channel would read as a change).
    _never: Option<Arc<watch::Sender<Option<StopReason>>>>,
}

impl StopSignal {
    pub fn new(run: watch::Receiver<Option<StopReason>>, node: watch::Receiver<Option<StopReason>>) -> Self {
        StopSignal { run, node, _never: None }
    }

    /// A signal that never fires (tests, benchmarks).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(None);
        StopSignal { run: rx.clone(), node: rx, _never: Some(Arc::new(tx)) }
    }

    /// The strongest stop requested so far.
    pub fn current(&self) -> Option<StopReason> {
        (*self.run.borrow()).max(*self.node.borrow())
    }

    /// Wait until a stop stronger than `than` is requested.
    pub async fn stronger_than(&mut self, than: Option<StopReason>) -> StopReason {
        loop {
            if let Some(r) = self.current() {
                if Some(r) > than {
                    return r;
                }
            }
            tokio::select! {
                r = self.run.changed() => if r.is_err() { std::future::pending::<()>().await },
                r = self.node.changed() => if r.is_err() { std::future::pending::<()>().await },
            }
        }
    }
}

/// Everything a running node gets.
pub struct NodeContext {
    pub run_id: String,
    pub pipeline: String,
    pub node: String,
    pub step: String,
    /// The part of an expanded step, `None` for the step's own node.
    pub part: Option<String>,
    pub attempt: u32,
    /// The workspace: the upstream Source's checkout, or the run's base dir.
    pub workspace: PathBuf,
    /// `workspace` joined with the step's `working_dir`.
    pub working_dir: PathBuf,
    /// Environment added for the step: outputs of its needs, defaults' env, the step's env.
    pub env: BTreeMap<String, String>,
    /// This run's directory under the state dir (`.runner/runs/<run-id>`).
    pub run_dir: PathBuf,
    /// Directory for run-independent caches (`.runner`).
    pub state_dir: PathBuf,
    /// Where the node may write `KEY=VALUE` lines that become its outputs.
    pub output_file: PathBuf,
    pub timeout: Option<Duration>,
    pub stop: StopSignal,
    pub events: EventSink,
    /// `--force` / `--force-step`: do the work even where a shortcut says nothing changed.
    pub force: bool,
    /// Where approval requests wait for a person's answer.
    pub approvals: crate::approval::ApprovalDesk,
}

/// Sends a node's log lines and progress into the event stream.
#[derive(Debug, Clone)]
pub struct EventSink {
    node: Arc<str>,
    tx: mpsc::Sender<Event>,
}

impl EventSink {
    pub fn new(node: impl Into<Arc<str>>, tx: mpsc::Sender<Event>) -> Self {
        EventSink { node: node.into(), tx }
    }

    pub async fn log(&self, stream: Stream, line: impl Into<String>) {
        let _ =
            self.tx.send(Event::now(EventKind::Log { node: self.node.to_string(), stream, line: line.into() })).await;
    }

    /// The channel behind the sink (the engine sends retry events through it).
    pub fn sender(&self) -> mpsc::Sender<Event> {
        self.tx.clone()
    }

    /// Ask for a person's approval (the answer comes through the [`crate::approval::ApprovalDesk`]).
    pub async fn approval_requested(&self, message: impl Into<String>) {
        let kind = EventKind::ApprovalRequested { node: self.node.to_string(), message: message.into() };
        let _ = self.tx.send(Event::now(kind)).await;
    }

    /// Progress from synchronous code (e.g. a libgit2 callback): dropped when the channel is full.
    pub fn try_progress(&self, done: u64, total: Option<u64>, unit: &str, message: impl Into<String>) {
        let _ = self.tx.try_send(self.progress_event(done, total, unit, message.into()));
    }

    pub async fn progress(&self, done: u64, total: Option<u64>, unit: &str, message: impl Into<String>) {
        let _ = self.tx.send(self.progress_event(done, total, unit, message.into())).await;
    }

    fn progress_event(&self, done: u64, total: Option<u64>, unit: &str, message: String) -> Event {
        let node = self.node.to_string();
        Event::now(EventKind::Progress { node, done, total, unit: unit.to_string(), message })
    }
}

/// A node that did its job.
#[derive(Debug, Clone, Default)]
pub struct NodeSuccess {
    /// `None` means `Succeeded`; a step may say `Unchanged` or `UpToDate`.
    pub status: Option<Status>,
    pub outputs: Outputs,
    /// The node produced a workspace (a Source): steps downstream run there.
    pub workspace: Option<PathBuf>,
    /// The node expanded at run time into these parts, to be spliced into the graph.
    pub expansion: Vec<Part>,
    /// The pipeline's definition changed (SelfUpdate): start nothing more, and restart the run from this one.
    pub restart: Option<Restart>,
}

/// A new pipeline definition to restart the run from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// Where the new definition was read (named in messages).
    pub path: PathBuf,
    pub text: String,
    /// What changed, for the log and the summary: `step `lint` added; `build` changed`.
    pub reason: String,
}

/// Why a node did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct StepError {
    pub kind: StepErrorKind,
    pub message: String,
}

/// The kind of a [`StepError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepErrorKind {
    /// It ran and failed; a retry may help.
    Failed,
    /// Its input or definition is wrong; a retry cannot help.
    Invalid,
    /// It was stopped (timeout, abort, interrupt).
    Stopped(StopReason),
}

impl StepError {
    pub fn failed(message: impl Into<String>) -> Self {
        StepError { kind: StepErrorKind::Failed, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        StepError { kind: StepErrorKind::Invalid, message: message.into() }
    }

    pub fn stopped(reason: StopReason, message: impl Into<String>) -> Self {
        StepError { kind: StepErrorKind::Stopped(reason), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(text: &str) -> crate::model::Pipeline {
        crate::load::parse(std::path::Path::new("p.ron"), text.to_string()).unwrap().pipeline
    }

    #[test]
    fn upstream_walks_every_ancestor_once_nearest_first() {
        let p = pipeline(
            r#"Pipeline(name: "p", steps: [
                Step(id: "a", kind: Shell(commands: ["x"])),
                Step(id: "b", needs: ["a"], kind: Shell(commands: ["x"])),
                Step(id: "c", needs: ["a"], kind: Shell(commands: ["x"])),
                Step(id: "d", needs: ["b", "c"], kind: Shell(commands: ["x"])),
                Step(id: "e", kind: Shell(commands: ["x"])),
            ])"#,
        );
        let index: HashMap<&str, usize> = p.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let ids = |i: usize| Upstream::new(&p.steps, &index, i).map(|s| s.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(3), ["b", "c", "a"]);
        assert_eq!(ids(1), ["a"]);
        assert!(ids(4).is_empty());
    }
}
