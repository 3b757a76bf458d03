//! The engine alone, with in-process steps (no processes, no files): `cargo bench -p runner-engine --bench engine`.
//!
//! * No-op DAGs of 1k, 10k and 100k steps in three shapes (a chain, a fan-out from one root, a random layered DAG
//!   with ~3 needs per step): plan building (parse, validate, plan) and the walk timed apart, the walk's cost per
//!   step, with the event channel drained by a task that only counts. Each 100k case runs in a child process (this
//!   binary, re-invoked as `engine child <shape> <steps> <jobs>`) so that its peak memory (VmHWM) is its own.
//! * A sleeping DAG: ~200 steps sleeping 5-50 ms, jobs unlimited: wall time against the critical path.
//!
//! Targets: < 5 µs of engine overhead per step at 10k steps, peak memory < 100 MB at 100k steps, the sleeping DAG's
//! wall time within 2% of its critical path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::model::{Step, StepKind};
use engine::plan::Plan;
use engine::step::{Catalog, Expansion, NodeContext, NodeSuccess, PlanContext, StepError, StepRunner, Upstream};
use engine::walk::{self, RunOutcome, WalkOptions};
use engine::RunStatus;
use tokio::sync::{mpsc, watch};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Width of a layer of the random layered DAGs.
const LAYER_WIDTH: usize = 100;
/// The channel capacity the CLI uses.
const CHANNEL: usize = 1024;
const SEED: u64 = 0x5eed_0fd4_a9e1;

// ---------------------------------------------------------------------------------------------------------------
// Steps

struct Noop;

#[async_trait::async_trait]
impl StepRunner for Noop {
    async fn run(&self, _ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        Ok(NodeSuccess::default())
    }
}

struct Sleep(Duration);

#[async_trait::async_trait]
impl StepRunner for Sleep {
    async fn run(&self, _ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        tokio::time::sleep(self.0).await;
        Ok(NodeSuccess::default())
    }
}

/// Shell steps whose first command is `sleep:MS` sleep that long; every other step does nothing.
struct BenchCatalog;

fn first_command(step: &Step) -> &str {
    match &step.kind {
        StepKind::Shell(spec) => spec.commands.first().map_or("", String::as_str),
        _ => "",
    }
}

impl Catalog for BenchCatalog {
    fn check(&self, _kind: &StepKind) -> Vec<(String, String)> {
        Vec::new()
    }

    fn describe(&self, step: &Step, _part: Option<&str>) -> String {
        first_command(step).to_string()
    }

    fn expand(&self, _step: &Step, _ctx: &PlanContext, _upstream: Upstream) -> Result<Expansion, String> {
        Ok(Expansion::Single)
    }

    fn runner(&self, step: &Step) -> Result<Box<dyn StepRunner>, StepError> {
        Ok(match first_command(step).strip_prefix("sleep:") {
            Some(ms) => Box::new(Sleep(Duration::from_millis(ms.parse().map_err(|_| StepError::invalid("ms"))?))),
            None => Box::new(Noop),
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// DAGs

/// splitmix64: small, fast, good enough to draw a DAG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chain,
    FanOut,
    Layered,
}

impl Shape {
    const ALL: [Shape; 3] = [Shape::Chain, Shape::FanOut, Shape::Layered];

    fn name(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::FanOut => "fan-out",
            Shape::Layered => "layered",
        }
    }

    fn parse(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Step i needs `needs[i]` (indices of earlier steps).
struct Dag {
    needs: Vec<Vec<usize>>,
}

impl Dag {
    fn new(shape: Shape, n: usize, width: usize, seed: u64) -> Dag {
        let needs = match shape {
            Shape::Chain => (0..n).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect(),
            Shape::FanOut => (0..n).map(|i| if i == 0 { vec![] } else { vec![0] }).collect(),
            Shape::Layered => {
                // Layers of `width` steps; each step after the first layer needs 1-5 distinct steps (mean 3) of the
                // two layers before it.
                let mut rng = Rng(seed);
                (0..n)
                    .map(|i| {
                        let layer = i / width;
                        if layer == 0 {
                            return vec![];
                        }
                        let from = layer.saturating_sub(2) * width;
                        let to = layer * width;
                        let k = (1 + rng.below(5) as usize).min(to - from);
                        let mut picked: Vec<usize> = Vec::with_capacity(k);
                        while picked.len() < k {
                            let c = from + rng.below((to - from) as u64) as usize;
                            if !picked.contains(&c) {
                                picked.push(c);
                            }
                        }
                        picked.sort_unstable();
                        picked
                    })
                    .collect()
            }
        };
        Dag { needs }
    }

    fn edges(&self) -> usize {
        self.needs.iter().map(Vec::len).sum()
    }

    /// The pipeline as RON text; `command(i)` is step i's one command.
    fn ron(&self, command: impl Fn(usize) -> String) -> String {
        let mut text = String::with_capacity(self.needs.len() * 80);
        text.push_str("Pipeline(name: \"bench\", steps: [\n");
        for (i, needs) in self.needs.iter().enumerate() {
            let _ = write!(text, "  Step(id: \"s{i}\", ");
            if !needs.is_empty() {
                text.push_str("needs: [");
                for (k, n) in needs.iter().enumerate() {
                    let _ = write!(text, "{}\"s{n}\"", if k > 0 { ", " } else { "" });
                }
                text.push_str("], ");
            }
            let _ = writeln!(text, "kind: Shell(commands: [\"{}\"])),", command(i));
        }
        text.push_str("])\n");
        text
    }

    /// The chain of needs with the longest sum of `cost`, and that sum.
    fn critical_path(&self, cost: impl Fn(usize) -> Duration) -> (Vec<usize>, Duration) {
        let mut best: Vec<(Duration, Option<usize>)> = Vec::with_capacity(self.needs.len());
        for (i, needs) in self.needs.iter().enumerate() {
            let longest = needs.iter().map(|&n| (best[n].0, Some(n))).max().unwrap_or_default();
            best.push((longest.0 + cost(i), longest.1));
        }
        let Some(end) = (0..best.len()).max_by_key(|&i| best[i].0) else {
            return (Vec::new(), Duration::ZERO);
        };
        let mut path = vec![end];
        while let Some(prev) = best[*path.last().unwrap()].1 {
            path.push(prev);
        }
        path.reverse();
        (path, best[end].0)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Planning and walking

#[derive(Debug, Default, Clone, Copy)]
struct PlanTimes {
    parse: Duration,
    validate: Duration,
    build: Duration,
}

impl PlanTimes {
    fn total(&self) -> Duration {
        self.parse + self.validate + self.build
    }
}

/// With `BENCH_PHASES` set, print the RSS and its peak so far after a planning phase (to stderr, for a child run
/// by hand: `engine child layered 100000 16`).
fn phase(name: &str) {
    if std::env::var_os("BENCH_PHASES").is_some() {
        eprintln!("{name}: RSS {} kB, peak {} kB", status_kb("VmRSS"), status_kb("VmHWM"));
    }
}

/// Parse, validate and build, on the calling thread (the main thread, as in the CLI: a recursion per step would
/// overflow its 8 MB stack at 100k steps, as validation's `tarjan_scc` once did).
fn plan(text: String) -> (Plan, PlanTimes) {
    let catalog = BenchCatalog;
    let t = Instant::now();
    phase("text");
    let loaded = engine::load::parse(Path::new("bench.ron"), text).unwrap_or_else(|e| panic!("{}", e.render()));
    phase("parsed");
    let parse = t.elapsed();
    let t = Instant::now();
    let valid = engine::validate::validate(loaded, &catalog, &|_| None).unwrap_or_else(|e| panic!("{}", e.render()));
    let validate = t.elapsed();
    phase("valid");
    let t = Instant::now();
    let mut plan = Plan::build(valid, &catalog, &PlanContext { base_dir: std::env::temp_dir() })
        .unwrap_or_else(|e| panic!("{e:?}"));
    let build = t.elapsed();
    phase("built");
    // As `runner run` does before walking.
    plan.pipeline.loaded.release_source();
    phase("released");
    (plan, PlanTimes { parse, validate, build })
}

/// An existing run directory, as in a real run (where the walker removes a node's stale output file before a retry).
fn run_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runner-engine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the bench run dir");
    dir
}

fn options(jobs: usize, run_dir: &Path) -> WalkOptions {
    WalkOptions {
        jobs,
        ..WalkOptions::new("bench", std::env::temp_dir(), run_dir.to_path_buf(), run_dir.to_path_buf())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // As the CLI builds it: one worker per core.
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

struct Walked {
    wall: Duration,
    outcome: RunOutcome,
    events: usize,
}

/// Walk as the CLI does: the walker in a task, the events drained by another (which only counts them).
fn walk_once(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>, jobs: usize, run_dir: &Path) -> Walked {
    let plan = plan.clone();
    let options = options(jobs, run_dir);
    rt.block_on(async move {
        let (_stop_tx, stop_rx) = watch::channel(None);
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        let counter = tokio::spawn(async move {
            let mut n = 0usize;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        let start = Instant::now();
        let walker = tokio::spawn(async move { walk::walk(&plan, Arc::new(BenchCatalog), options, stop_rx, tx).await });
        let outcome = walker.await.expect("the walk panicked");
        let wall = start.elapsed();
        let events = counter.await.expect("the counter panicked");
        assert_eq!(outcome.status, RunStatus::Succeeded);
        Walked { wall, outcome, events }
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------------------------
// Memory

/// The system allocator, counting while `COUNTING` is on (one relaxed load per call otherwise).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK_LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
            let live = LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed) + layout.size() as i64;
            PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed) + new_size as i64
                - layout.size() as i64;
            PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations of one walk, per step.
struct AllocReport {
    allocs: f64,
    bytes: f64,
    /// Peak of live heap during the walk above what was live before it.
    peak: f64,
    /// Heap still live once the walk's outcome and events are dropped: what the walk leaked.
    leaked: f64,
}

fn count_allocations(shape: Shape, steps: usize, jobs: usize) -> AllocReport {
    let dag = Dag::new(shape, steps, LAYER_WIDTH, SEED);
    let (plan, _) = plan(dag.ron(|_| "noop".to_string()));
    let plan = Arc::new(plan);
    let dir = run_dir();
    let rt = runtime();
    // Warm the runtime up (worker threads, timer wheel, thread-locals) before counting.
    drop(walk_once(&rt, &plan, jobs, &dir));
    for c in [&ALLOCS, &ALLOCATED] {
        c.store(0, Ordering::SeqCst);
    }
    LIVE.store(0, Ordering::SeqCst);
    PEAK_LIVE.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let w = walk_once(&rt, &plan, jobs, &dir);
    drop(w);
    // Let the workers drop what they still hold of finished tasks.
    std::thread::sleep(Duration::from_millis(50));
    COUNTING.store(false, Ordering::SeqCst);
    let _ = std::fs::remove_dir_all(&dir);
    let n = steps as f64;
    AllocReport {
        allocs: ALLOCS.load(Ordering::SeqCst) as f64 / n,
        bytes: ALLOCATED.load(Ordering::SeqCst) as f64 / n,
        peak: PEAK_LIVE.load(Ordering::SeqCst) as f64 / n,
        leaked: LIVE.load(Ordering::SeqCst) as f64 / n,
    }
}

/// A field of /proc/self/status, in kB.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reset VmHWM to the current RSS (Linux >= 4.0), so that a later VmHWM is the peak of what follows.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Live heap after each planning phase, bytes per step.
struct PlanMemory {
    text: f64,
    /// `SourceMap::index` of the text alone: built only when a diagnostic needs a position.
    source_map: f64,
    /// Text and model.
    loaded: f64,
    valid: f64,
    plan: f64,
}

fn plan_memory(shape: Shape, steps: usize) -> PlanMemory {
    let work = || {
        let dag = Dag::new(shape, steps, LAYER_WIDTH, SEED);
        let catalog = BenchCatalog;
        let live = || LIVE.load(Ordering::SeqCst) as f64 / steps as f64;
        LIVE.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        let text = dag.ron(|_| "noop".to_string());
        let text_bytes = live();
        let map = engine::source_map::SourceMap::index(&text);
        let source_map = live() - text_bytes;
        drop(map);
        let loaded = engine::load::parse(Path::new("bench.ron"), text).expect("parse");
        let loaded_bytes = live();
        let valid = engine::validate::validate(loaded, &catalog, &|_| None).expect("valid");
        let valid_bytes = live();
        let plan = Plan::build(valid, &catalog, &PlanContext { base_dir: std::env::temp_dir() }).expect("plan");
        let plan_bytes = live();
        COUNTING.store(false, Ordering::SeqCst);
        drop(plan);
        PlanMemory { text: text_bytes, source_map, loaded: loaded_bytes, valid: valid_bytes, plan: plan_bytes }
    };
    work()
}

/// Heap left allocated by creating and dropping one `StopSignal::never()`.
fn never_signal_leak() -> i64 {
    LIVE.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    drop(std::hint::black_box(engine::step::StopSignal::never()));
    COUNTING.store(false, Ordering::SeqCst);
    LIVE.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------------------------------
// Cases

#[derive(Debug, Default, Clone)]
struct CaseResult {
    shape: String,
    steps: usize,
    edges: usize,
    jobs: usize,
    plan: PlanTimes,
    /// Median walk time.
    walk: Duration,
    walk_min: Duration,
    runs: usize,
    events: usize,
    /// Peak RSS of the whole process (generate, plan, walk), kB; 100k cases only.
    hwm_total: Option<u64>,
    /// RSS before the walk and the peak during it, kB.
    rss_before_walk: Option<u64>,
    hwm_walk: Option<u64>,
}

impl CaseResult {
    fn per_step(&self) -> Duration {
        self.walk / self.steps as u32
    }

    /// One line a child prints and the parent reads.
    fn to_line(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "CASE {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            self.shape,
            self.steps,
            self.edges,
            self.jobs,
            self.plan.parse.as_nanos(),
            self.plan.validate.as_nanos(),
            self.plan.build.as_nanos(),
            self.walk.as_nanos(),
            self.walk_min.as_nanos(),
            self.runs,
            self.events,
            opt(self.hwm_total),
            opt(self.rss_before_walk),
            opt(self.hwm_walk),
        )
    }

    fn from_line(line: &str) -> Option<CaseResult> {
        let f: Vec<&str> = line.strip_prefix("CASE ")?.split(' ').collect();
        let ns = |s: &str| s.parse::<u64>().ok().map(Duration::from_nanos);
        let opt = |s: &str| s.parse::<u64>().ok();
        Some(CaseResult {
            shape: f[0].to_string(),
            steps: f[1].parse().ok()?,
            edges: f[2].parse().ok()?,
            jobs: f[3].parse().ok()?,
            plan: PlanTimes { parse: ns(f[4])?, validate: ns(f[5])?, build: ns(f[6])? },
            walk: ns(f[7])?,
            walk_min: ns(f[8])?,
            runs: f[9].parse().ok()?,
            events: f[10].parse().ok()?,
            hwm_total: opt(f[11]),
            rss_before_walk: opt(f[12]),
            hwm_walk: opt(f[13]),
        })
    }
}

/// Walks per case: enough for a stable median in a few seconds.
fn runs_for(steps: usize) -> usize {
    match steps {
        0..=2_000 => 30,
        2_001..=20_000 => 15,
        _ => 1,
    }
}

fn case(shape: Shape, steps: usize, jobs: usize) -> CaseResult {
    let dag = Dag::new(shape, steps, LAYER_WIDTH, SEED);
    let text = dag.ron(|_| "noop".to_string());
    let (plan, times) = plan(text);
    let plan = Arc::new(plan);
    let dir = run_dir();
    let rt = runtime();
    let runs = runs_for(steps);
    let mut walls = Vec::with_capacity(runs);
    let mut events = 0;
    for _ in 0..runs {
        let w = walk_once(&rt, &plan, jobs, &dir);
        assert_eq!(w.outcome.nodes.len(), steps);
        events = w.events;
        walls.push(w.wall);
    }
    let _ = std::fs::remove_dir_all(&dir);
    CaseResult {
        shape: shape.name().to_string(),
        steps,
        edges: dag.edges(),
        jobs,
        plan: times,
        walk_min: *walls.iter().min().unwrap(),
        walk: median(walls),
        runs,
        events,
        ..CaseResult::default()
    }
}

/// The peak of the whole child is VmHWM before it was reset plus what the walk added: read it before resetting.
fn child(shape: Shape, steps: usize, jobs: usize) {
    let dag = Dag::new(shape, steps, LAYER_WIDTH, SEED);
    let text = dag.ron(|_| "noop".to_string());
    drop(dag);
    let (plan, times) = plan(text);
    let plan = Arc::new(plan);
    let dir = run_dir();
    let rt = runtime();
    let hwm_planning = status_kb("VmHWM");
    let rss_before_walk = status_kb("VmRSS");
    let reset = reset_peak();
    let w = walk_once(&rt, &plan, jobs, &dir);
    let hwm_walk = status_kb("VmHWM");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(w.outcome.nodes.len(), steps);
    let result = CaseResult {
        shape: shape.name().to_string(),
        steps,
        edges: plan.graph.edge_count(),
        jobs,
        plan: times,
        walk: w.wall,
        walk_min: w.wall,
        runs: 1,
        events: w.events,
        hwm_total: Some(if reset { hwm_planning.max(hwm_walk) } else { hwm_walk }),
        rss_before_walk: reset.then_some(rss_before_walk),
        hwm_walk: reset.then_some(hwm_walk),
    };
    println!("{}", result.to_line());
}

fn in_child(shape: Shape, steps: usize, jobs: usize) -> CaseResult {
    let exe = std::env::current_exe().expect("the bench binary");
    let out = Command::new(exe)
        .args(["child", shape.name(), &steps.to_string(), &jobs.to_string()])
        .output()
        .expect("run the bench binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!("child {} {steps} failed: {}\n{stdout}", shape.name(), String::from_utf8_lossy(&out.stderr));
    }
    stdout.lines().find_map(CaseResult::from_line).expect("the child's CASE line")
}

struct SleepRun {
    wall: Duration,
    critical: Duration,
    nominal: Duration,
    /// The nominal critical path slept step after step in one task: what tokio's timer alone costs.
    floor: Duration,
    floor_steps: usize,
}

/// ~200 steps sleeping 5-50 ms, layered 20 wide, jobs unlimited.
fn sleeping(runs: usize) -> (usize, usize, Vec<SleepRun>) {
    let steps = 200;
    let dag = Dag::new(Shape::Layered, steps, 20, SEED ^ 0xdead_beef);
    let mut rng = Rng(SEED);
    let ms: Vec<u64> = (0..steps).map(|_| 5 + rng.below(46)).collect();
    let (chain, nominal) = dag.critical_path(|i| Duration::from_millis(ms[i]));
    let (plan, _) = plan(dag.ron(|i| format!("sleep:{}", ms[i])));
    let plan = Arc::new(plan);
    let dir = run_dir();
    let rt = runtime();
    let mut out = Vec::new();
    for _ in 0..runs {
        let w = walk_once(&rt, &plan, 0, &dir);
        let floor = rt.block_on(async {
            let t = Instant::now();
            for &i in &chain {
                tokio::time::sleep(Duration::from_millis(ms[i])).await;
            }
            t.elapsed()
        });
        out.push(SleepRun {
            wall: w.wall,
            critical: w.outcome.critical_path_duration,
            nominal,
            floor,
            floor_steps: chain.len(),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    (steps, dag.edges(), out)
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

fn pct(over: Duration, base: Duration) -> f64 {
    (over.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0
}

fn main() {
    // As the `runner` binary does.
    engine::memory::release_large_blocks_eagerly();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("child") {
        let shape = Shape::parse(&args[1]).expect("shape");
        child(shape, args[2].parse().expect("steps"), args[3].parse().expect("jobs"));
        return;
    }
    // `engine profile <shape> <steps> <jobs> <walks>`: plan once, walk many times (for `perf record`).
    if args.first().map(String::as_str) == Some("profile") {
        let shape = Shape::parse(&args[1]).expect("shape");
        let steps: usize = args[2].parse().expect("steps");
        let dag = Dag::new(shape, steps, LAYER_WIDTH, SEED);
        let plan = Arc::new(plan(dag.ron(|_| "noop".to_string())).0);
        let (dir, rt) = (run_dir(), runtime());
        let t = Instant::now();
        let walks: u32 = args[4].parse().expect("walks");
        for _ in 0..walks {
            walk_once(&rt, &plan, args[3].parse().expect("jobs"), &dir);
        }
        println!("{} µs per step", us(t.elapsed() / walks / steps as u32));
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // `cargo bench -p runner-engine --bench engine -- <filter>`: only cases whose name contains the filter.
    let filter = args.first().cloned().unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "engine benchmark: in-process no-op steps, multi-thread tokio runtime ({cores} workers), channel {CHANNEL}"
    );
    println!();

    let mut results = Vec::new();
    for steps in SIZES {
        for shape in Shape::ALL {
            for jobs in [0, 16] {
                let name = format!("{} {steps} jobs={jobs}", shape.name());
                if !name.contains(&filter) {
                    continue;
                }
                let r = if steps >= 100_000 { in_child(shape, steps, jobs) } else { case(shape, steps, jobs) };
                eprintln!("  done: {name}");
                results.push(r);
            }
        }
    }

    if !results.is_empty() {
        println!("No-op DAGs: walk = median of `runs` walks; per step = walk / steps; min = the fastest walk per step");
        println!(
            "| shape   |   steps |   edges | jobs | plan ms (parse+valid+build) |  walk ms | per step µs | min µs | events | runs |"
        );
        println!(
            "|---------|--------:|--------:|-----:|-----------------------------|---------:|------------:|-------:|-------:|-----:|"
        );
        for r in &results {
            let plan = format!(
                "{:>9} ({}+{}+{})",
                ms(r.plan.total()),
                ms(r.plan.parse),
                ms(r.plan.validate),
                ms(r.plan.build)
            );
            println!(
                "| {:<7} | {:>7} | {:>7} | {:>4} | {:<27} | {:>8} | {:>11} | {:>6} | {:>6} | {:>4} |",
                r.shape,
                r.steps,
                r.edges,
                r.jobs,
                plan,
                ms(r.walk),
                us(r.per_step()),
                us(r.walk_min / r.steps as u32),
                r.events,
                r.runs
            );
        }
        println!();
        let big: Vec<&CaseResult> = results.iter().filter(|r| r.hwm_total.is_some()).collect();
        if !big.is_empty() {
            println!("Peak memory at 100k steps (each case in its own child process)");
            println!(
                "| shape   | jobs | peak RSS MB (VmHWM) | RSS before walk MB | peak during walk MB | walk adds MB |"
            );
            println!(
                "|---------|-----:|--------------------:|-------------------:|--------------------:|-------------:|"
            );
            for r in big {
                let (before, during) = (r.rss_before_walk.unwrap_or(0), r.hwm_walk.unwrap_or(0));
                println!(
                    "| {:<7} | {:>4} | {:>19.1} | {:>18.1} | {:>19.1} | {:>12.1} |",
                    r.shape,
                    r.jobs,
                    mb(r.hwm_total.unwrap_or(0)),
                    mb(before),
                    mb(during),
                    mb(during.saturating_sub(before))
                );
            }
            println!();
        }
    }

    if "allocations".contains(&filter) || filter.is_empty() {
        println!("Allocations of one walk at 10k steps, per step (counting allocator, counted on a second walk)");
        println!("| shape   | jobs | allocations | bytes allocated | peak live bytes | live bytes after (leaked) |");
        println!("|---------|-----:|------------:|----------------:|----------------:|--------------------------:|");
        for shape in Shape::ALL {
            for jobs in [0, 16] {
                let a = count_allocations(shape, 10_000, jobs);
                println!(
                    "| {:<7} | {:>4} | {:>11.1} | {:>15.0} | {:>15.0} | {:>25.0} |",
                    shape.name(),
                    jobs,
                    a.allocs,
                    a.bytes,
                    a.peak,
                    // A few bytes freed that were allocated before counting would print as "-0".
                    a.leaked.round() + 0.0
                );
            }
        }
        println!();
        println!(
            "StopSignal::never() leaves {} bytes allocated once dropped; size_of::<NodeContext>() = {} bytes, \
             size_of::<Step>() = {} bytes",
            never_signal_leak(),
            std::mem::size_of::<NodeContext>(),
            std::mem::size_of::<Step>()
        );
        println!();
        println!("Live heap after each planning phase at 100k steps, bytes per step (cumulative)");
        println!("| shape   | RON text | + parse (model, text) | source map (built on demand) | + validate | + plan |");
        println!("|---------|---------:|----------------------:|-----------------------------:|-----------:|-------:|");
        for shape in Shape::ALL {
            let m = plan_memory(shape, 100_000);
            println!(
                "| {:<7} | {:>8.0} | {:>21.0} | {:>28.0} | {:>10.0} | {:>6.0} |",
                shape.name(),
                m.text,
                m.loaded,
                m.source_map,
                m.valid,
                m.plan
            );
        }
        println!();
    }

    let mut sleep_overheads = Vec::new();
    if "sleeping".contains(&filter) || filter.is_empty() {
        let (steps, edges, runs) = sleeping(5);
        sleep_overheads = runs.iter().map(|r| pct(r.wall, r.critical)).collect();
        println!(
            "Sleeping DAG: {steps} steps, {edges} edges, layered 20 wide, 5-50 ms each, jobs unlimited; \
             nominal critical path {} ms",
            ms(runs[0].nominal)
        );
        println!(
            "| run | wall ms | critical path ms (RunOutcome) | wall over critical path | timer floor ms | wall over floor | wall over nominal |"
        );
        println!(
            "|----:|--------:|------------------------------:|------------------------:|---------------:|----------------:|------------------:|"
        );
        for (i, r) in runs.iter().enumerate() {
            println!(
                "| {:>3} | {:>7} | {:>29} | {:>22.2}% | {:>14} | {:>14.2}% | {:>16.2}% |",
                i + 1,
                ms(r.wall),
                ms(r.critical),
                pct(r.wall, r.critical),
                ms(r.floor),
                pct(r.wall, r.floor),
                pct(r.wall, r.nominal)
            );
        }
        println!(
            "(timer floor: the {} steps of the nominal critical path slept one after the other in a single task)",
            runs[0].floor_steps
        );
        println!();
    }

    println!("Targets");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let at_10k: Vec<&CaseResult> = results.iter().filter(|r| r.steps == 10_000).collect();
    if let Some(worst) = at_10k.iter().max_by_key(|r| r.per_step()) {
        let best = at_10k.iter().min_by_key(|r| r.per_step()).unwrap();
        println!(
            "- overhead per step at 10k steps < 5 µs: {} ({} to {} µs; worst {} jobs={})",
            verdict(worst.per_step() < Duration::from_micros(5)),
            us(best.per_step()),
            us(worst.per_step()),
            worst.shape,
            worst.jobs
        );
    }
    let peaks: Vec<&CaseResult> = results.iter().filter(|r| r.hwm_total.is_some()).collect();
    if let Some(worst) = peaks.iter().max_by_key(|r| r.hwm_total) {
        let best = peaks.iter().min_by_key(|r| r.hwm_total).unwrap();
        let walk_adds = |r: &CaseResult| mb(r.hwm_walk.unwrap_or(0).saturating_sub(r.rss_before_walk.unwrap_or(0)));
        println!(
            "- peak memory at 100k steps < 100 MB: {} ({:.0} to {:.0} MB; the walk alone adds {:.0} to {:.0} MB)",
            verdict(mb(worst.hwm_total.unwrap_or(0)) < 100.0),
            mb(best.hwm_total.unwrap_or(0)),
            mb(worst.hwm_total.unwrap_or(0)),
            peaks.iter().map(|r| walk_adds(r)).fold(f64::INFINITY, f64::min),
            peaks.iter().map(|r| walk_adds(r)).fold(0.0, f64::max),
        );
    }
    if !sleep_overheads.is_empty() {
        let worst = sleep_overheads.iter().copied().fold(f64::MIN, f64::max);
        sleep_overheads.sort_by(f64::total_cmp);
        let median = sleep_overheads[sleep_overheads.len() / 2];
        println!(
            "- sleeping DAG wall within 2% of its critical path: {} (median run {median:.2}%, worst {worst:.2}%)",
            verdict(median < 2.0)
        );
    }
}
