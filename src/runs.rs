//! Past runs of a pipeline: history, status, resume, and answers to approvals from another shell.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use engine::incremental::Fingerprint;
use engine::model::{Pipeline, StepKind};
use engine::plan::Plan;
use engine::record::{write_atomic, RunState};
use engine::walk::Reused;
use petgraph::Direction;

/// Each step's definition as written, hashed: what a resume compares.
pub fn step_hashes(pipeline: &Pipeline) -> BTreeMap<String, String> {
    pipeline
        .steps
        .iter()
        .map(|s| {
            let mut f = Fingerprint::default();
            f.add("step", &serde_json::to_vec(s).unwrap_or_default());
            (s.id.to_string(), f.finish())
        })
        .collect()
}

/// The runs of `pipeline` under the state dir, oldest first.
pub fn runs_of(state_dir: &Path, pipeline: &str) -> Vec<(String, PathBuf)> {
    let prefix = format!("{pipeline}-");
    let mut runs: Vec<(String, PathBuf)> = std::fs::read_dir(state_dir.join("runs"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            (rest.starts_with(|c: char| c.is_ascii_digit()) && !rest.contains('-')).then(|| (name, e.path()))
        })
        .collect();
    runs.sort();
    runs
}

fn find_run(state_dir: &Path, pipeline: &str, run: Option<&str>) -> Result<(String, PathBuf), String> {
    let runs = runs_of(state_dir, pipeline);
    match run {
        Some(id) => runs.into_iter().find(|(r, _)| r == id).ok_or_else(|| {
            format!("error: no run `{id}` of pipeline `{pipeline}` in {}\n", state_dir.join("runs").display())
        }),
        None => runs
            .into_iter()
            .next_back()
            .ok_or_else(|| format!("error: pipeline `{pipeline}` has no runs in {}\n", state_dir.display())),
    }
}

fn duration_between(start: &str, end: Option<&str>) -> Option<std::time::Duration> {
    let (Ok(s), Some(Ok(e))) = (humantime::parse_rfc3339(start), end.map(humantime::parse_rfc3339)) else {
        return None;
    };
    e.duration_since(s).ok()
}

/// How long a run took: its working time, and for a resumed run also the span from its start to its end when the
/// two differ (the time between a stop and its resume is not work).
fn duration(s: &RunState) -> (String, String) {
    let span = duration_between(&s.started, s.finished.as_deref());
    let format = crate::report::format_duration;
    match span {
        None => ("-".to_string(), String::new()),
        Some(span) if s.resumed.is_empty() || s.working_ms == 0 => (format(span), String::new()),
        Some(span) => {
            let working = std::time::Duration::from_millis(s.working_ms);
            let spanned = if span > working + std::time::Duration::from_secs(1) {
                format!(", {} from start to end", format(span))
            } else {
                String::new()
            };
            (format(working), spanned)
        }
    }
}

/// `runner history`: id, start, working time, outcome of every run.
pub fn history(state_dir: &Path, pipeline: &str) -> String {
    let runs = runs_of(state_dir, pipeline);
    if runs.is_empty() {
        return format!("pipeline `{pipeline}` has no runs in {}\n", state_dir.display());
    }
    let width = runs.iter().map(|(id, _)| id.chars().count()).max().unwrap_or(6).min(engine::graph::MAX_COLUMN);
    let mut out = format!("{:width$}  {:24}  {:>9}  outcome\n", "run", "started", "working");
    for (id, dir) in runs {
        match RunState::load(&dir) {
            Ok(s) => {
                let (working, span) = duration(&s);
                let resumed =
                    if s.resumed.is_empty() { String::new() } else { format!(" (resumed {}x{span})", s.resumed.len()) };
                let _ = writeln!(out, "{id:width$}  {:24}  {working:>9}  {}{resumed}", s.started, outcome(&s));
            }
            Err(e) => {
                let _ = writeln!(out, "{id:width$}  {e}");
            }
        }
    }
    out
}

/// Whether no node of the run ever started (it stopped at its preflight).
fn nothing_ran(s: &RunState) -> bool {
    s.nodes.values().all(|n| n.started.is_none())
}

/// A run's outcome in a word or a few: `succeeded`, `unfinished`, `failed (nothing ran: preflight ...)`.
fn outcome(s: &RunState) -> String {
    match (&s.error, s.finished.is_none() && matches!(s.status.as_str(), "running" | "starting")) {
        (_, true) => "unfinished".to_string(),
        (Some(e), _) if nothing_ran(s) => format!("{} (nothing ran: {})", s.status, e.lines().next().unwrap_or("")),
        (Some(e), _) => format!("{} ({})", s.status, e.lines().next().unwrap_or("")),
        (None, _) => s.status.clone(),
    }
}

/// `runner status`: one run's nodes with status, duration and log, in the plan's order (the order of the file,
/// each step's parts after it), as the run's summary lists them.
pub fn status(plan: &Plan, state_dir: &Path, run: Option<&str>) -> Result<String, String> {
    let pipeline = plan.pipeline.loaded.pipeline.name.as_str();
    let (id, dir) = find_run(state_dir, pipeline, run)?;
    let state = RunState::load(&dir).map_err(|e| format!("error: {e}\n"))?;
    let mut out = match &state.error {
        Some(e) if nothing_ran(&state) => {
            format!("run {id} of `{pipeline}`: {}: nothing ran, its preflight stopped it:\n{e}\n", state.status)
        }
        Some(e) => format!("run {id} of `{pipeline}`: {}: its preflight stopped it:\n{e}\n", state.status),
        None => format!("run {id} of `{pipeline}`: {}\n", outcome(&state)),
    };
    if state.nodes.is_empty() {
        return Ok(out);
    }
    let width = state.nodes.keys().map(|k| k.chars().count()).max().unwrap_or(4).clamp(4, engine::graph::MAX_COLUMN);
    let _ = writeln!(out, "\n{:width$}  {:10}  {:>9}  log", "step", "status", "duration");
    for (node, n) in in_plan_order(plan, &state) {
        let duration = n
            .duration_ms
            .map_or("-".to_string(), |ms| crate::report::format_duration(std::time::Duration::from_millis(ms)));
        // A node that never ran (skipped, or never reached) wrote no log: nothing to point at.
        let log = if Path::new(&n.log).exists() { n.log.as_str() } else { "-" };
        let _ = writeln!(out, "{node:width$}  {:10}  {duration:>9}  {log}", n.status);
        if let Some(e) = &n.error {
            let _ = writeln!(out, "{:width$}  {}", "", e.lines().next().unwrap_or(""));
        }
    }
    Ok(out)
}

/// A run's nodes in the plan's order: a node the plan has at its place; a part spliced in at run time (an
/// assembly's stacks) after its step's node, in the order they started; a node the plan no longer has (the file
/// changed since) at the end.
fn in_plan_order<'a>(plan: &Plan, state: &'a RunState) -> Vec<(&'a String, &'a engine::record::NodeState)> {
    let position: HashMap<&str, usize> = plan.graph.node_indices().map(|n| (&*plan.graph[n].id, n.index())).collect();
    let mut nodes: Vec<_> = state.nodes.iter().collect();
    nodes.sort_by_cached_key(|(id, n)| {
        let step = id.split('/').next().unwrap_or(id);
        match (position.get(id.as_str()), position.get(step)) {
            (Some(&at), _) => (at, 0, String::new()),
            (None, Some(&at)) => (at, 1, n.started.clone().unwrap_or_default()),
            (None, None) => (usize::MAX, 1, n.started.clone().unwrap_or_default()),
        }
    });
    nodes
}

/// What `--resume` finds.
pub enum Resumable {
    /// The last run, to continue.
    Run(Box<Resume>),
    /// No run to continue: the pipeline has none yet, or the last one's record cannot be read (the runner died
    /// before writing it, or it is damaged). A new run starts instead; this says why.
    Fresh(String),
}

/// What a resume continues: the run, its state, and the nodes it reuses.
pub struct Resume {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub state: RunState,
    pub reused: HashMap<String, Reused>,
}

/// The last unfinished or failed run of the plan's pipeline, and which of its nodes stay done: those that
/// succeeded, whose step did not change, and whose upstream nodes are reused too. A last run whose record cannot
/// be read (or none at all) is [`Resumable::Fresh`]: nothing of it can be trusted, so nothing is reused.
pub fn resume(plan: &Plan, state_dir: &Path, allow_changed: bool) -> Result<Resumable, String> {
    let pipeline = &plan.pipeline.loaded.pipeline;
    let Ok((run_id, run_dir)) = find_run(state_dir, &pipeline.name, None) else {
        return Ok(Resumable::Fresh(format!("nothing to resume: pipeline `{}` has no runs yet", pipeline.name)));
    };
    let state = match RunState::load(&run_dir) {
        Ok(state) => state,
        Err(e) => return Ok(Resumable::Fresh(format!("cannot resume run {run_id}: {e}"))),
    };
    if state.status == "succeeded" {
        return Err(format!("error: nothing to resume: the last run {run_id} of `{}` succeeded\n", pipeline.name));
    }
    let now = step_hashes(pipeline);
    let step_of = |node: &str| node.split('/').next().unwrap_or(node).to_string();
    let mut changed: Vec<String> = state
        .nodes
        .iter()
        .filter(|(_, n)| done(&n.status))
        .map(|(node, _)| step_of(node))
        .filter(|step| state.steps.get(step) != now.get(step))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    changed.sort();
    if !changed.is_empty() && !allow_changed {
        return Err(format!(
            "error: cannot resume run {run_id}: {} changed since it ran ({}); those steps completed with the old \
             definition\n  hint: run again from the start, or pass --allow-changed to run the changed steps (and \
             what follows them) again\n",
            plan.pipeline.loaded.path.display(),
            changed.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    let reused = reuse(plan, &state, &changed);
    Ok(Resumable::Run(Box::new(Resume { run_id, run_dir, state, reused })))
}

fn done(status: &str) -> bool {
    matches!(status, "succeeded" | "unchanged" | "up-to-date")
}

/// Nodes of `plan` that stay done: completed in `state`, their step not in `changed`, everything upstream reused.
fn reuse(plan: &Plan, state: &RunState, changed: &[String]) -> HashMap<String, Reused> {
    let mut reused = HashMap::new();
    for n in petgraph::algo::toposort(&plan.graph, None).unwrap_or_default() {
        let id: &str = &plan.graph[n].id;
        let Some(old) = state.nodes.get(id) else { continue };
        let step = id.split('/').next().unwrap_or(id);
        let upstream_reused =
            plan.graph.neighbors_directed(n, Direction::Incoming).all(|m| reused.contains_key(&*plan.graph[m].id));
        if done(&old.status) && !changed.iter().any(|c| c == step) && upstream_reused {
            let (outputs, workspace) = (old.outputs.clone(), old.workspace.clone());
            reused.insert(id.to_string(), Reused { outputs, workspace, from: None });
        }
    }
    reused
}

/// After a SelfUpdate restart: what the new definition can reuse of the run so far (steps whose definitions are
/// identical in both, with everything upstream reused too).
pub fn reusable(old: &Plan, new: &Plan, state: &RunState) -> HashMap<String, Reused> {
    let old_steps = &old.pipeline.loaded.pipeline.steps;
    let changed: Vec<String> = new
        .pipeline
        .loaded
        .pipeline
        .steps
        .iter()
        .filter(|s| old_steps.iter().find(|o| o.id == s.id) != Some(*s))
        .map(|s| s.id.to_string())
        .collect();
    reuse(new, state, &changed)
}

/// `runner approve`: answer an Approval step of a run (the latest by default) through its run directory.
pub fn approve(plan: &Plan, state_dir: &Path, step: &str, run: Option<&str>, reject: bool) -> Result<String, String> {
    let pipeline = &plan.pipeline.loaded.pipeline;
    let approvals: Vec<&str> =
        pipeline.steps.iter().filter(|s| matches!(s.kind, StepKind::Approval(_))).map(|s| s.id.as_str()).collect();
    if !approvals.contains(&step) {
        let hint = engine::validate::closest(step, approvals.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(format!("error: `{step}` is not an Approval step of `{}`{hint}\n", pipeline.name));
    }
    let (id, dir) = find_run(state_dir, &pipeline.name, run)?;
    let file = steps::approval::answer_file(&dir, step);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("error: cannot create {}: {e}\n", parent.display()))?;
    }
    let answer = if reject { "rejected" } else { "approved" };
    write_atomic(&file, answer.as_bytes()).map_err(|e| format!("error: cannot write {}: {e}\n", file.display()))?;
    Ok(format!("{answer} `{step}` of run {id}\n"))
}

/// For `runner run --only`: each of `nodes` as its latest run of the pipeline left it done, with the step's
/// definition unchanged since; `Err` names those no run did (they must run first).
pub fn latest_successes(plan: &Plan, state_dir: &Path, nodes: &[&str]) -> Result<HashMap<String, Reused>, Vec<String>> {
    let pipeline = &plan.pipeline.loaded.pipeline;
    let now = step_hashes(pipeline);
    let mut found: HashMap<String, Reused> = HashMap::new();
    for (run_id, dir) in runs_of(state_dir, &pipeline.name).into_iter().rev() {
        if found.len() == nodes.len() {
            break;
        }
        let Ok(state) = RunState::load(&dir) else { continue };
        for &node in nodes {
            if found.contains_key(node) {
                continue;
            }
            let step = node.split('/').next().unwrap_or(node);
            let Some(old) = state.nodes.get(node) else { continue };
            if done(&old.status) && state.steps.get(step) == now.get(step) {
                let from = Some(format!("in run {run_id}"));
                let (outputs, workspace) = (old.outputs.clone(), old.workspace.clone());
                found.insert(node.to_string(), Reused { outputs, workspace, from });
            }
        }
    }
    let missing: Vec<String> = nodes.iter().filter(|n| !found.contains_key(**n)).map(|n| n.to_string()).collect();
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}
