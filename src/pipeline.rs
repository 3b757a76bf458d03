//! A pipeline file made ready to run: loaded, validated and planned, with the step catalog that will run it.
//! Every command and the server start here; errors come back rendered for people (file:line:column, caret).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::model::StepKind;
use engine::plan::Plan;
use engine::step::PlanContext;
use engine::validate::{self, closest};
use steps::StepCatalog;

/// Steps running at once when neither `--jobs` nor the pipeline's `max_parallel` says.
pub const DEFAULT_JOBS: usize = 16;

/// A planned pipeline and the catalog of step kinds that runs it.
pub struct Planned {
    pub plan: Plan,
    pub catalog: Arc<StepCatalog>,
}

impl Planned {
    /// The pipeline's name (names its run state).
    pub fn name(&self) -> &str {
        &self.plan.pipeline.loaded.pipeline.name
    }
}

/// What a command loads a pipeline for: which warnings it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `validate`, `plan`, `graph`: every warning, unset `${env:...}` variables included.
    Inspect,
    /// `run`, `step`: unset variables are not warned about (the run API makes them errors, once).
    Run,
    /// `history`, `status`, `approve` read saved runs: nothing about the environment.
    ReadRuns,
}

/// Load, validate and plan `file` to inspect it; `source_dirs` are `--source-dir [ID=]PATH` values. Warnings go
/// to stderr; errors come back rendered.
pub fn load(file: &Path, source_dirs: &[String]) -> Result<Planned, String> {
    load_for(file, source_dirs, Purpose::Inspect)
}

/// [`load`] for `purpose`.
pub fn load_for(file: &Path, source_dirs: &[String], purpose: Purpose) -> Result<Planned, String> {
    let loaded = engine::load::load(file).map_err(|e| e.render())?;
    plan_loaded_for(loaded, source_dirs, purpose)
}

/// Validate and plan a pipeline already read (e.g. one the binary wrote itself).
pub fn plan_loaded(loaded: engine::load::Loaded, source_dirs: &[String]) -> Result<Planned, String> {
    plan_loaded_for(loaded, source_dirs, Purpose::Inspect)
}

/// [`plan_loaded`] for `purpose`.
pub fn plan_loaded_for(
    loaded: engine::load::Loaded,
    source_dirs: &[String],
    purpose: Purpose,
) -> Result<Planned, String> {
    let source_dirs = parse_source_dirs(&loaded, source_dirs)?;
    let aws_endpoint = loaded.pipeline.defaults.aws_endpoint_url.clone().filter(|e| !e.is_empty());
    let codebuild = steps::source::CodeBuild::from_env(std::env::vars());
    let catalog = StepCatalog { source_dirs, aws_endpoint, codebuild, ..Default::default() };
    let env = |name: &str| std::env::var(name).ok();
    let valid = validate::validate(loaded, &catalog, &env).map_err(|invalid| {
        // Errors may point into included files: the total is for the file given and what it includes.
        let with = if invalid.loaded.included.is_empty() { "" } else { " and the files it includes" };
        format!(
            "{}\n{} in {}{with}\n",
            invalid.render(),
            engine::counted(invalid.error_count(), "error"),
            invalid.loaded.path.display()
        )
    })?;
    let mut warnings = valid.warnings.clone();
    if purpose == Purpose::Inspect {
        warnings.extend(valid.unset_env.iter().cloned());
        warnings.sort_by_key(|d| d.span.map(|s| s.start));
    }
    // Each warning once per process: one about a shared included file (an unset variable of datalake.ron) would
    // otherwise be printed again for every pipeline including it (`validate pipelines/{dev,test,prod}.ron`).
    static SAID: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut said = SAID.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let new: Vec<String> = warnings
        .iter()
        .map(|w| validate::render_all(&valid.loaded, std::slice::from_ref(w)))
        .filter(|text| said.insert(text.clone()))
        .collect();
    drop(said);
    if !new.is_empty() {
        eprintln!("{}", new.join("\n"));
    }
    let base_dir = std::env::current_dir().map_err(|e| format!("error: cannot read the current directory: {e}\n"))?;
    let plan = Plan::build(valid, &catalog, &PlanContext { base_dir }).map_err(|e| e.render())?;
    Ok(Planned { plan, catalog: Arc::new(catalog) })
}

/// The plan of a new definition a SelfUpdate found, with a catalog that remembers the run restarted.
pub fn plan_restart(path: &Path, text: String, catalog: &StepCatalog, base_dir: &Path) -> Result<Planned, String> {
    let loaded = engine::load::parse(path, text).map_err(|e| e.render())?;
    let env = |name: &str| std::env::var(name).ok();
    let valid = validate::validate(loaded, catalog, &env).map_err(|invalid| invalid.render())?;
    let plan =
        Plan::build(valid, catalog, &PlanContext { base_dir: base_dir.to_path_buf() }).map_err(|e| e.render())?;
    let mut next = catalog.clone();
    next.self_update.current = self_update_base(&plan);
    next.self_update.restarted = true;
    Ok(Planned { plan, catalog: Arc::new(next) })
}

/// The definition a SelfUpdate compares the new one with; only kept when the pipeline has a SelfUpdate (a copy
/// of the whole model otherwise held for nothing).
pub fn self_update_base(plan: &Plan) -> Option<Arc<engine::model::Pipeline>> {
    let steps = &plan.pipeline.loaded.pipeline.steps;
    steps
        .iter()
        .any(|s| matches!(s.kind, StepKind::SelfUpdate(_)))
        .then(|| Arc::new(plan.pipeline.loaded.pipeline.clone()))
}

/// `--jobs`, else the pipeline's `max_parallel`, else [`DEFAULT_JOBS`].
pub fn jobs_for(plan: &Plan, jobs: Option<usize>) -> usize {
    jobs_limit(plan, jobs).nodes
}

/// [`jobs_for`] and which of the three set it, for the plan's heading.
pub fn jobs_limit(plan: &Plan, jobs: Option<usize>) -> engine::graph::JobsLimit {
    let (nodes, set_by) = match (jobs, plan.pipeline.loaded.pipeline.defaults.max_parallel) {
        (Some(n), _) => (n, "--jobs"),
        (None, Some(n)) => (n, "the pipeline's max_parallel"),
        (None, None) => (DEFAULT_JOBS, "the default, --jobs N or the pipeline's max_parallel changes it"),
    };
    engine::graph::JobsLimit { nodes, set_by }
}

/// `--source-dir [ID=]PATH` against the pipeline's Source steps.
fn parse_source_dirs(loaded: &engine::load::Loaded, args: &[String]) -> Result<HashMap<String, PathBuf>, String> {
    let source_ids: Vec<&str> =
        loaded.pipeline.steps.iter().filter(|s| matches!(s.kind, StepKind::Source(_))).map(|s| s.id.as_str()).collect();
    let mut dirs = HashMap::new();
    for arg in args {
        let (id, path) = match arg.split_once('=') {
            Some((id, path)) => (id.to_string(), path),
            None => match source_ids.as_slice() {
                [only] => (only.to_string(), arg.as_str()),
                [] => return Err(format!("error: --source-dir {arg}: the pipeline has no Source step\n")),
                many => {
                    return Err(format!(
                        "error: --source-dir {arg}: the pipeline has {} Source steps ({}); write --source-dir \
                         ID=PATH\n",
                        many.len(),
                        many.join(", ")
                    ))
                }
            },
        };
        if !source_ids.contains(&id.as_str()) {
            let hint =
                closest(&id, source_ids.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(format!("error: --source-dir {arg}: `{id}` is not a Source step{hint}\n"));
        }
        let path = PathBuf::from(path);
        if !path.is_dir() {
            return Err(format!("error: --source-dir {arg}: {} is not a directory\n", path.display()));
        }
        dirs.insert(id, path);
    }
    Ok(dirs)
}

/// Where a step's files are before a run: the `--source-dir` (or the last clone) of the Source upstream of it,
/// else the current directory.
pub fn workspace_of(plan: &Plan, catalog: &StepCatalog, step: usize, state_dir: &Path) -> PathBuf {
    let steps = &plan.pipeline.loaded.pipeline.steps;
    let mut queue = VecDeque::from([step]);
    let mut seen = HashSet::new();
    while let Some(i) = queue.pop_front() {
        if !seen.insert(i) {
            continue;
        }
        let s = &steps[i];
        if matches!(s.kind, StepKind::Source(_)) {
            if let Some(checkout) = catalog.checkout_of(&s.id) {
                return checkout.dir().to_path_buf();
            }
            return state_dir.join("workspaces").join(&plan.pipeline.loaded.pipeline.name).join(&s.id);
        }
        for need in &s.needs {
            if let Some(j) = steps.iter().position(|x| x.id == *need) {
                queue.push_back(j);
            }
        }
    }
    PathBuf::from(".")
}

/// A plan cut down to part of the pipeline (`runner run FILE TARGET...`, `--only`).
pub struct Selected {
    pub plan: Plan,
    /// The nodes the targets named.
    pub targets: Vec<Arc<str>>,
    /// The nodes upstream of them, which they need (kept in the plan; `--only` reuses them from earlier runs).
    pub upstream: Vec<Arc<str>>,
}

/// The plan cut to `targets` (step or node ids) and everything upstream of them, like `cdk deploy STACK`: what
/// runs after them is left out. `Err` for a target that names no step or node, with the closest id suggested.
pub fn select(mut plan: Plan, targets: &[String]) -> Result<Selected, String> {
    use petgraph::graph::NodeIndex;
    let steps = &plan.pipeline.loaded.pipeline.steps;
    let mut named: Vec<NodeIndex> = Vec::new();
    for target in targets {
        let nodes: Vec<NodeIndex> = plan
            .graph
            .node_indices()
            .filter(|&n| *plan.graph[n].id == **target || steps[plan.graph[n].step].id == *target)
            .collect();
        if nodes.is_empty() {
            let ids = steps.iter().map(|s| s.id.as_str()).chain(plan.graph.node_weights().map(|n| &*n.id));
            let hint = closest(target, ids).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(format!(
                "error: `{target}` is not a step or node of `{}`{hint}\n",
                plan.pipeline.loaded.pipeline.name
            ));
        }
        named.extend(nodes);
    }
    let named: HashSet<NodeIndex> = named.into_iter().collect();
    let mut upstream: HashSet<NodeIndex> = HashSet::new();
    let mut stack: Vec<NodeIndex> = named.iter().copied().collect();
    while let Some(n) = stack.pop() {
        for m in plan.graph.neighbors_directed(n, petgraph::Direction::Incoming) {
            if !named.contains(&m) && upstream.insert(m) {
                stack.push(m);
            }
        }
    }
    let ids = |set: &HashSet<NodeIndex>| -> Vec<Arc<str>> {
        let mut v: Vec<NodeIndex> = set.iter().copied().collect();
        v.sort();
        v.into_iter().map(|n| plan.graph[n].id.clone()).collect()
    };
    let (targets, upstream_ids) = (ids(&named), ids(&upstream));
    plan.graph = plan
        .graph
        .filter_map(|n, node| (named.contains(&n) || upstream.contains(&n)).then(|| node.clone()), |_, &()| Some(()));
    Ok(Selected { plan, targets, upstream: upstream_ids })
}
