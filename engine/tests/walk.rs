//! The walker end to end, with an in-process catalog: no processes, no files. Each step's first command says what
//! its runner does (see `Behaviour`), and every run of a node is recorded with its context and its times.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::event::{Event, EventKind, RunStatus, Status};
use engine::model::{Step, StepKind};
use engine::plan::Plan;
use engine::step::{
    Catalog, Expansion, NodeContext, NodeSuccess, Part, PlanContext, StepError, StepRunner, StopReason, Upstream,
};
use engine::walk::{self, RunOutcome, WalkOptions};
use tokio::sync::{mpsc, watch};

/// What a node's runner does, read from its step's commands (after `${...}` substitution):
/// `sleep:MS`, `fail`, `fail-first:N` (fails the first N attempts), `out:K=V` (an output), `parts:a,b<a` (plan-time
/// parts; `b<a` means b needs a; `a!k` provides k, `a?k` consumes k) and `expand:a,b<a` (parts found at run
/// time); `part-sleep:a=MS` and `part-fail:a` act on one part only. Anything else does nothing.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    sleep: Option<Duration>,
    fail: bool,
    panic: bool,
    fail_first: u32,
    outputs: BTreeMap<String, String>,
    expand: Vec<Part>,
    part_sleep: HashMap<String, Duration>,
    part_fail: Vec<String>,
}

/// `name<need+need!provided+provided?consumed+consumed`: every suffix optional.
fn parse_parts(list: &str) -> Vec<Part> {
    let keys = |s: &str| s.split('+').filter(|k| !k.is_empty()).map(str::to_string).collect::<Vec<_>>();
    list.split(',')
        .map(|p| {
            let (p, consumes) = match p.split_once('?') {
                Some((p, c)) => (p, Some(keys(c))),
                None => (p, None),
            };
            let (p, provides) = match p.split_once('!') {
                Some((p, k)) => (p, keys(k)),
                None => (p, Vec::new()),
            };
            let mut it = p.split('<');
            let name = it.next().unwrap().to_string();
            let needs = it.next().map(keys).unwrap_or_default();
            Part { description: format!("part {name}"), name, needs, provides, consumes }
        })
        .collect()
}

fn commands(step: &Step) -> &[String] {
    match &step.kind {
        StepKind::Shell(spec) => &spec.commands,
        _ => &[],
    }
}

impl Behaviour {
    fn of(step: &Step) -> Behaviour {
        let mut b = Behaviour::default();
        for c in commands(step) {
            if let Some(ms) = c.strip_prefix("sleep:") {
                b.sleep = Some(Duration::from_millis(ms.parse().unwrap()));
            } else if c == "fail" {
                b.fail = true;
            } else if c == "panic" {
                b.panic = true;
            } else if let Some(n) = c.strip_prefix("fail-first:") {
                b.fail_first = n.parse().unwrap();
            } else if let Some(kv) = c.strip_prefix("out:") {
                let (k, v) = kv.split_once('=').unwrap();
                b.outputs.insert(k.to_string(), v.to_string());
            } else if let Some(list) = c.strip_prefix("expand:") {
                b.expand = parse_parts(list);
            } else if let Some(spec) = c.strip_prefix("part-sleep:") {
                let (part, ms) = spec.split_once('=').unwrap();
                b.part_sleep.insert(part.to_string(), Duration::from_millis(ms.parse().unwrap()));
            } else if let Some(part) = c.strip_prefix("part-fail:") {
                b.part_fail.push(part.to_string());
            }
        }
        b
    }
}

/// One attempt of one node, as the runner saw it.
#[derive(Debug, Clone)]
struct Ran {
    node: String,
    part: Option<String>,
    attempt: u32,
    env: BTreeMap<String, String>,
    /// The step's commands as the runner was built with them: substituted.
    commands: Vec<String>,
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct TestCatalog {
    log: Arc<Mutex<Vec<Ran>>>,
}

impl TestCatalog {
    fn runs(&self) -> Vec<Ran> {
        self.log.lock().unwrap().clone()
    }

    fn ran(&self, node: &str) -> Vec<Ran> {
        self.runs().into_iter().filter(|r| r.node == node).collect()
    }

    /// The one attempt of `node`.
    fn once(&self, node: &str) -> Ran {
        let runs = self.ran(node);
        assert_eq!(runs.len(), 1, "`{node}` should have run exactly once, ran {} times", runs.len());
        runs.into_iter().next().unwrap()
    }
}

impl Catalog for TestCatalog {
    fn check(&self, _kind: &StepKind) -> Vec<(String, String)> {
        Vec::new()
    }

    fn describe(&self, step: &Step, part: Option<&str>) -> String {
        format!("test step {} {}", step.id, part.unwrap_or(""))
    }

    fn expand(&self, step: &Step, _ctx: &PlanContext, _upstream: Upstream) -> Result<Expansion, String> {
        let c = commands(step);
        if let Some(list) = c.iter().find_map(|c| c.strip_prefix("parts:")) {
            return Ok(Expansion::Parts(parse_parts(list)));
        }
        if c.iter().any(|c| c.starts_with("expand:")) {
            return Ok(Expansion::AtRunTime);
        }
        Ok(Expansion::Single)
    }

    fn runner(&self, step: &Step) -> Result<Box<dyn StepRunner>, StepError> {
        Ok(Box::new(TestRunner {
            behaviour: Behaviour::of(step),
            commands: commands(step).to_vec(),
            log: self.log.clone(),
        }))
    }
}

struct TestRunner {
    behaviour: Behaviour,
    commands: Vec<String>,
    log: Arc<Mutex<Vec<Ran>>>,
}

#[async_trait::async_trait]
impl StepRunner for TestRunner {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        let start = Instant::now();
        let b = &self.behaviour;
        let mut result = Ok(());
        let part_sleep = ctx.part.as_ref().and_then(|p| b.part_sleep.get(p)).copied();
        if let Some(d) = part_sleep.or(b.sleep) {
            let mut stop = ctx.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                reason = stop.stronger_than(None) => result = Err(StepError::stopped(reason, "stopped")),
            }
        }
        if b.panic {
            panic!("index out of bounds: the len is 0 but the index is 0");
        }
        let part_fails = ctx.part.as_ref().is_some_and(|p| b.part_fail.contains(p));
        if result.is_ok() && (b.fail || part_fails || ctx.attempt <= b.fail_first) {
            result = Err(StepError::failed(format!("attempt {} failed", ctx.attempt)));
        }
        self.log.lock().unwrap().push(Ran {
            node: ctx.node.clone(),
            part: ctx.part.clone(),
            attempt: ctx.attempt,
            env: ctx.env.clone(),
            commands: self.commands.clone(),
            start,
            end: Instant::now(),
        });
        result?;
        // Parts of an expanded step run the same step: only the step's own node expands.
        let expansion = if ctx.part.is_none() { b.expand.clone() } else { Vec::new() };
        Ok(NodeSuccess { outputs: b.outputs.clone(), expansion, ..NodeSuccess::default() })
    }
}

/// A plan of these `Step(...)` entries.
fn plan(catalog: &TestCatalog, steps: &[&str]) -> Plan {
    let text = format!("Pipeline(name: \"t\", steps: [{}])", steps.join(",\n"));
    let loaded = engine::load::parse(Path::new("t.ron"), text).unwrap_or_else(|e| panic!("{}", e.render()));
    let valid = engine::validate::validate(loaded, catalog, &|_| None).unwrap_or_else(|e| panic!("{}", e.render()));
    let ctx = PlanContext { base_dir: PathBuf::from("/nonexistent/base") };
    Plan::build(valid, catalog, &ctx).unwrap_or_else(|e| panic!("{e:?}"))
}

fn options(jobs: usize, fail_fast: bool) -> WalkOptions {
    let state = PathBuf::from("/nonexistent/state");
    WalkOptions {
        jobs,
        fail_fast,
        ..WalkOptions::new("test-run", PathBuf::from("/nonexistent/base"), state.clone(), state.join("runs/test-run"))
    }
}

struct Walked {
    outcome: RunOutcome,
    events: Vec<Event>,
}

impl Walked {
    fn status(&self, node: &str) -> Status {
        self.outcome
            .nodes
            .iter()
            .find(|n| &*n.id == node)
            .unwrap_or_else(|| panic!("no node `{node}` in {:?}", self.ids()))
            .status
    }

    fn ids(&self) -> Vec<&str> {
        self.outcome.nodes.iter().map(|n| &*n.id).collect()
    }

    /// The status each NodeFinished event reported, by node.
    fn finished(&self) -> HashMap<String, Vec<Status>> {
        let mut out: HashMap<String, Vec<Status>> = HashMap::new();
        for e in &self.events {
            if let EventKind::NodeFinished { node, status, .. } = &e.kind {
                out.entry(node.clone()).or_default().push(*status);
            }
        }
        out
    }
}

/// Walk `plan`, draining the events in a task of their own; `stop_after` sends an interrupt after that long.
async fn walk_with(
    plan: &Plan,
    catalog: Arc<TestCatalog>,
    options: WalkOptions,
    stop_after: Option<Duration>,
) -> Walked {
    let (stop_tx, stop_rx) = watch::channel(None);
    let (tx, mut rx) = mpsc::channel(16);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let stopper = tokio::spawn(async move {
        if let Some(after) = stop_after {
            tokio::time::sleep(after).await;
            stop_tx.send_replace(Some(StopReason::Interrupt));
        }
        // Keep the sender alive until the walk is over.
        std::future::pending::<()>().await;
    });
    let catalog: Arc<dyn Catalog> = catalog;
    let outcome = tokio::time::timeout(Duration::from_secs(30), walk::walk(plan, catalog, options, stop_rx, tx))
        .await
        .expect("the walk should end");
    stopper.abort();
    let events = collector.await.unwrap();
    Walked { outcome, events }
}

async fn walk_plan(plan: &Plan, catalog: &Arc<TestCatalog>, jobs: usize, fail_fast: bool) -> Walked {
    walk_with(plan, catalog.clone(), options(jobs, fail_fast), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_nodes_run_concurrently_when_jobs_are_unlimited() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "a", kind: Shell(commands: ["sleep:200"]))"#,
            r#"Step(id: "b", kind: Shell(commands: ["sleep:200"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    assert!(w.outcome.duration >= Duration::from_millis(200), "{:?}", w.outcome.duration);
    assert!(w.outcome.duration < Duration::from_millis(400), "two 200ms sleepers took {:?}", w.outcome.duration);
    let (a, b) = (catalog.once("a"), catalog.once("b"));
    assert!(a.start < b.end && b.start < a.end, "the two nodes should overlap in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_runs_one_node_at_a_time() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "a", kind: Shell(commands: ["sleep:100"]))"#,
            r#"Step(id: "b", kind: Shell(commands: ["sleep:100"]))"#,
            r#"Step(id: "c", kind: Shell(commands: ["sleep:100"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 1, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    assert!(
        w.outcome.duration >= Duration::from_millis(300),
        "three 100ms nodes took {:?} with jobs=1",
        w.outcome.duration
    );
    let mut runs = catalog.runs();
    runs.sort_by_key(|r| r.start);
    for pair in runs.windows(2) {
        assert!(pair[0].end <= pair[1].start, "`{}` and `{}` overlap with jobs=1", pair[0].node, pair[1].node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_skips_its_dependents_while_an_independent_branch_finishes() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "a", kind: Shell(commands: ["fail"]))"#,
            r#"Step(id: "b", needs: ["a"], kind: Shell(commands: ["x"]))"#,
            r#"Step(id: "c", needs: ["b"], kind: Shell(commands: ["x"]))"#,
            r#"Step(id: "d", kind: Shell(commands: ["sleep:100"]))"#,
            r#"Step(id: "e", needs: ["d"], kind: Shell(commands: ["x"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Failed);
    let finished = w.finished();
    assert_eq!(finished["a"], [Status::Failed]);
    assert_eq!(finished["b"], [Status::Skipped]);
    assert_eq!(finished["c"], [Status::Skipped]);
    assert_eq!(finished["d"], [Status::Succeeded]);
    assert_eq!(finished["e"], [Status::Succeeded]);
    assert!(catalog.ran("b").is_empty() && catalog.ran("c").is_empty(), "skipped nodes must never run");
    assert!(!w
        .events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::NodeStarted { node, .. } if node == "b" || node == "c")));
    assert_eq!(w.status("c"), Status::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_panics_fails_its_node_and_skips_its_dependents() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "a", kind: Shell(commands: ["panic"]))"#,
            r#"Step(id: "b", needs: ["a"], kind: Shell(commands: ["x"]))"#,
            r#"Step(id: "c", kind: Shell(commands: ["x"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Failed);
    let finished = w.finished();
    assert_eq!(finished["a"], [Status::Failed]);
    assert_eq!(finished["b"], [Status::Skipped]);
    assert_eq!(finished["c"], [Status::Succeeded]);
    let a = w.outcome.nodes.iter().find(|n| &*n.id == "a").unwrap();
    assert_eq!(
        a.error.as_deref(),
        Some("the step panicked: index out of bounds: the len is 0 but the index is 0"),
        "{a:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_cancels_the_running_and_unstarted_nodes() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "a", kind: Shell(commands: ["sleep:20", "fail"]))"#,
            r#"Step(id: "slow", kind: Shell(commands: ["sleep:5000"]))"#,
            r#"Step(id: "queued", kind: Shell(commands: ["x"]))"#,
            r#"Step(id: "after", needs: ["slow"], kind: Shell(commands: ["x"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 2, true).await;
    assert_eq!(w.outcome.status, RunStatus::Failed);
    assert!(
        w.outcome.duration < Duration::from_secs(2),
        "the slow node should be stopped, took {:?}",
        w.outcome.duration
    );
    assert_eq!(w.status("a"), Status::Failed);
    assert_eq!(w.status("slow"), Status::Cancelled);
    assert_eq!(w.status("queued"), Status::Cancelled);
    assert!(catalog.ran("queued").is_empty(), "nothing new starts after the first failure");
    assert!(catalog.ran("after").is_empty());
    assert!(!w.outcome.nodes.iter().any(|n| n.status == Status::Succeeded), "{:?}", w.outcome.nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_time_parts_become_step_slash_part_nodes_in_order_and_dependents_wait_for_all() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "before", kind: Shell(commands: ["sleep:10"]))"#,
            r#"Step(id: "p", needs: ["before"], kind: Shell(commands: ["parts:x,y<x,z<x+y,w", "sleep:30"]))"#,
            r#"Step(id: "after", needs: ["p"], kind: Shell(commands: ["x"]))"#,
        ],
    );
    let mut ids: Vec<&str> = p.graph.node_weights().map(|n| &*n.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["after", "before", "p/w", "p/x", "p/y", "p/z"]);
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    let (before, x, y, z, pw, after) = (
        catalog.once("before"),
        catalog.once("p/x"),
        catalog.once("p/y"),
        catalog.once("p/z"),
        catalog.once("p/w"),
        catalog.once("after"),
    );
    assert_eq!(x.part.as_deref(), Some("x"));
    for part in [&x, &y, &z, &pw] {
        assert!(before.end <= part.start, "`{}` started before `before` ended", part.node);
        assert!(part.end <= after.start, "`after` started before `{}` ended", part.node);
    }
    assert!(x.end <= y.start, "y needs x");
    assert!(x.end <= z.start && y.end <= z.start, "z needs x and y");
    assert!(pw.start < y.start, "w needs no other part: it runs alongside x");
    assert!(catalog.ran("p").is_empty(), "an expanded step has no node of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_time_expansion_splices_parts_between_the_step_and_its_dependents() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "e", kind: Shell(commands: ["expand:x,y<x", "sleep:20"]))"#,
            r#"Step(id: "after", needs: ["e"], kind: Shell(commands: ["x"]))"#,
        ],
    );
    assert!(p.graph.node_weights().any(|n| &*n.id == "e" && n.expands_at_run_time));
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    assert_eq!(w.ids(), ["e", "after", "e/x", "e/y"]);
    for id in ["e", "after", "e/x", "e/y"] {
        assert_eq!(w.status(id), Status::Succeeded, "{id}");
    }
    let (e, x, y, after) = (catalog.once("e"), catalog.once("e/x"), catalog.once("e/y"), catalog.once("after"));
    assert!(e.end <= x.start && x.end <= y.start && y.end <= after.start, "order: e, e/x, e/y, after");
    assert_eq!(y.part.as_deref(), Some("y"));
    let added: Vec<_> = w
        .events
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::NodesAdded { node, nodes } => Some((node.clone(), nodes.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(added.len(), 1, "one NodesAdded event");
    let (node, nodes) = &added[0];
    assert_eq!(node, "e");
    let added_ids: Vec<&str> = nodes.iter().map(|n| &*n.id).collect();
    assert_eq!(added_ids, ["e/x", "e/y"]);
    assert_eq!(nodes[1].needs.iter().map(|n| &**n).collect::<Vec<_>>(), ["e", "e/x"]);
    let position = |pred: &dyn Fn(&EventKind) -> bool| w.events.iter().position(|e| pred(&e.kind)).unwrap();
    let added_at = position(&|k| matches!(k, EventKind::NodesAdded { .. }));
    let x_started = position(&|k| matches!(k, EventKind::NodeStarted { node, .. } if node == "e/x"));
    assert!(added_at < x_started, "NodesAdded comes before the parts start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_waits_only_for_the_providers_of_what_it_consumes_not_for_its_steps_whole_need() {
    // A Publish and a Deploy that both expand at run time (a synth before them): the Deploy's stack `x` needs
    // only the asset `a`; the slow asset `b` is for stack `y`.
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "publish", kind: Shell(commands: ["expand:a!ka,b!kb", "part-sleep:b=400"]))"#,
            r#"Step(id: "deploy", needs: ["publish"], kind: Shell(commands: ["expand:x?ka,y?kb+ka"]))"#,
            r#"Step(id: "after", needs: ["deploy"], kind: Shell(commands: ["x"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    let (a, b) = (catalog.once("publish/a"), catalog.once("publish/b"));
    let (deploy, x, y, after) =
        (catalog.once("deploy"), catalog.once("deploy/x"), catalog.once("deploy/y"), catalog.once("after"));
    assert!(deploy.start < b.end, "the Deploy expanded without waiting for `b`");
    assert!(x.start < b.end, "deploy/x started before the asset it does not need was published");
    assert!(a.end <= x.start, "deploy/x waited for the asset it needs");
    assert!(b.end <= y.start, "deploy/y waited for the slow asset it needs");
    assert!(x.end <= after.start && y.end <= after.start, "what needs the Deploy waits for all its stacks");
    let needs_of = |id: &str| {
        w.events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::NodesAdded { nodes, .. } => nodes.iter().find(|n| &*n.id == id).cloned(),
                _ => None,
            })
            .unwrap()
            .needs
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(needs_of("deploy/x"), ["deploy", "publish/a"]);
    assert_eq!(needs_of("deploy/y"), ["deploy", "publish/a", "publish/b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_provider_skips_only_the_parts_that_consume_it() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "publish", kind: Shell(commands: ["expand:a!ka,b!kb", "part-fail:b"]))"#,
            // The Deploy expands after `b` failed: its parts are connected to a finished failure.
            r#"Step(id: "deploy", needs: ["publish"], kind: Shell(commands: ["expand:x?ka,y?kb", "sleep:100"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Failed);
    assert_eq!(w.status("publish/b"), Status::Failed);
    assert_eq!(w.status("deploy/x"), Status::Succeeded);
    assert_eq!(w.status("deploy/y"), Status::Skipped);
    let y = w.outcome.nodes.iter().find(|n| &*n.id == "deploy/y").unwrap();
    assert_eq!(y.error.as_deref(), Some("not run: it needs `publish/b`, which failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_time_parts_wait_only_for_the_providers_of_what_they_consume() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "publish", kind: Shell(commands: ["parts:a!ka,b!kb"]))"#,
            r#"Step(id: "gate", kind: Shell(commands: ["x"]))"#,
            r#"Step(id: "deploy", needs: ["publish", "gate"], kind: Shell(commands: ["parts:x?ka,y"]))"#,
        ],
    );
    let needs = |id: &str| {
        let n = p.graph.node_indices().find(|&n| &*p.graph[n].id == id).unwrap();
        p.needs_of(n).iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    // x consumes `ka`: publish/a, and the gate (which provides nothing); y says nothing: everything.
    assert_eq!(needs("deploy/x"), ["publish/a", "gate"]);
    assert_eq!(needs("deploy/y"), ["publish/a", "publish/b", "gate"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_reach_a_dependents_env_and_its_substituted_fields() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "make", kind: Shell(commands: ["out:BUCKET=my-bucket", "out:REGION=eu-west-1"]))"#,
            r#"Step(id: "use", needs: ["make"], env: {"WHERE": "${steps.make.outputs.REGION}"},
                   kind: Shell(commands: ["deploy ${steps.make.outputs.BUCKET} now"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    let used = catalog.once("use");
    assert_eq!(used.env.get("BUCKET").map(String::as_str), Some("my-bucket"));
    assert_eq!(used.env.get("REGION").map(String::as_str), Some("eu-west-1"));
    assert_eq!(used.env.get("WHERE").map(String::as_str), Some("eu-west-1"));
    assert_eq!(used.commands, ["deploy my-bucket now"]);
    let make_outputs = w.events.iter().find_map(|e| match &e.kind {
        EventKind::NodeFinished { node, outputs, .. } if node == "make" => Some(outputs.clone()),
        _ => None,
    });
    assert_eq!(make_outputs.unwrap().get("BUCKET").map(String::as_str), Some("my-bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_critical_path_of_a_diamond_is_its_longer_branch() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "top", kind: Shell(commands: ["sleep:50"]))"#,
            r#"Step(id: "short", needs: ["top"], kind: Shell(commands: ["sleep:50"]))"#,
            r#"Step(id: "long", needs: ["top"], kind: Shell(commands: ["sleep:250"]))"#,
            r#"Step(id: "bottom", needs: ["short", "long"], kind: Shell(commands: ["sleep:50"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    assert_eq!(w.outcome.critical_path, ["top", "long", "bottom"]);
    let cp = w.outcome.critical_path_duration;
    assert!(cp >= Duration::from_millis(350) && cp < Duration::from_millis(450), "critical path {cp:?}");
    assert!(cp <= w.outcome.duration, "the critical path {cp:?} cannot exceed the wall time {:?}", w.outcome.duration);
    let finished = w.events.iter().find_map(|e| match &e.kind {
        EventKind::RunFinished { critical_path, .. } => Some(critical_path.clone()),
        _ => None,
    });
    assert_eq!(finished.unwrap(), ["top", "long", "bottom"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_interrupts_the_run_and_cancels_unstarted_nodes() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "running", kind: Shell(commands: ["sleep:5000"]))"#,
            r#"Step(id: "waiting", kind: Shell(commands: ["x"]))"#,
            r#"Step(id: "downstream", needs: ["running"], kind: Shell(commands: ["x"]))"#,
        ],
    );
    let w = walk_with(&p, catalog.clone(), options(1, false), Some(Duration::from_millis(100))).await;
    assert_eq!(w.outcome.status, RunStatus::Interrupted);
    assert!(
        w.outcome.duration < Duration::from_secs(2),
        "the interrupt should end the walk, took {:?}",
        w.outcome.duration
    );
    assert_eq!(w.status("running"), Status::Cancelled);
    assert_eq!(w.status("waiting"), Status::Cancelled);
    assert!(catalog.ran("waiting").is_empty() && catalog.ran("downstream").is_empty());
    // A dependent of the cancelled node is reported as not run (skipped because its need was cancelled).
    assert!(!w.status("downstream").is_success());
    let finished = w.finished();
    assert!(w.ids().iter().all(|id| finished.get(*id).is_some_and(|s| s.len() == 1)), "one NodeFinished per node");
    assert!(matches!(w.events.last().unwrap().kind, EventKind::RunFinished { status: RunStatus::Interrupted, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_rerun_a_failing_node_until_it_succeeds_and_announce_each_retry() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[
            r#"Step(id: "flaky", retries: 2, retry_backoff: "1ms", kind: Shell(commands: ["fail-first:2"]))"#,
            r#"Step(id: "after", needs: ["flaky"], kind: Shell(commands: ["x"]))"#,
        ],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Succeeded);
    let attempts: Vec<u32> = catalog.ran("flaky").iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let retrying: Vec<(u32, u64)> = w
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::NodeRetrying { node, attempt, delay_ms, .. } if node == "flaky" => Some((*attempt, *delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(retrying, [(2, 1), (3, 2)], "retry attempts with a doubling backoff");
    assert_eq!(w.finished()["flaky"], [Status::Succeeded]);
    assert_eq!(catalog.once("after").attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_failing_more_often_than_its_retries_fails() {
    let catalog = Arc::new(TestCatalog::default());
    let p = plan(
        &catalog,
        &[r#"Step(id: "flaky", retries: 2, retry_backoff: "1ms", kind: Shell(commands: ["fail-first:3"]))"#],
    );
    let w = walk_plan(&p, &catalog, 0, false).await;
    assert_eq!(w.outcome.status, RunStatus::Failed);
    assert_eq!(catalog.ran("flaky").len(), 3, "one attempt and two retries");
    assert_eq!(w.status("flaky"), Status::Failed);
}
