//! Semantic checks of a parsed pipeline, all errors at once, sorted by position. No network, no file system.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use petgraph::graph::DiGraph;

use crate::diagnostic::{Diagnostic, Severity};
use crate::load::Loaded;
use crate::model::Step;
use crate::source_map::Span;
use crate::step::{Catalog, Upstream};
use crate::subst::{self, Piece};

/// The longest timeout that still makes sense for one attempt of a step.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// A pipeline that passed validation.
#[derive(Debug, Clone)]
pub struct ValidPipeline {
    pub loaded: Loaded,
    pub warnings: Vec<Diagnostic>,
    /// Every `${env:NAME}` of the steps that hold any, with where it is written.
    pub env_refs: EnvRefs,
    /// Whether a step's fields hold any `${...}` (substitution can be skipped when not).
    pub has_refs: Vec<bool>,
}

/// By step index, each `${env:NAME}` the step holds and where (steps with none are left out).
pub type EnvRefs = BTreeMap<usize, Vec<(String, Option<Span>)>>;

impl ValidPipeline {
    /// Step `i`'s settings, defaults applied. Worked out when asked rather than kept for every step: its
    /// durations were checked by validation.
    pub fn settings(&self, i: usize) -> StepSettings {
        let defaults = &self.loaded.pipeline.defaults;
        let step = &self.loaded.pipeline.steps[i];
        let duration = |text: Option<&str>| text.and_then(|t| humantime::parse_duration(t.trim()).ok());
        StepSettings {
            timeout: duration(step.timeout.as_deref()).or_else(|| duration(defaults.timeout.as_deref())),
            retries: step.retries.or(defaults.retries).unwrap_or(0),
            retry_backoff: duration(step.retry_backoff.as_deref())
                .or_else(|| duration(defaults.retry_backoff.as_deref()))
                .unwrap_or(DEFAULT_BACKOFF),
            working_dir: step.working_dir.as_deref().map(String::from).or_else(|| defaults.working_dir.clone()),
        }
    }

    /// The `${env:NAME}` references of step `i`.
    pub fn env_refs_of(&self, i: usize) -> &[(String, Option<Span>)] {
        self.env_refs.get(&i).map_or(&[], Vec::as_slice)
    }
}

/// Per-step settings, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSettings {
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub working_dir: Option<String>,
}

/// A pipeline that did not pass: every error, then the warnings.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub loaded: Box<Loaded>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    pub fn render(&self) -> String {
        render_all(&self.loaded, &self.diagnostics)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
}

/// Render diagnostics of a loaded file, one after the other.
pub fn render_all(loaded: &Loaded, diagnostics: &[Diagnostic]) -> String {
    let file = loaded.path.display().to_string();
    diagnostics.iter().map(|d| d.render(&file, &loaded.text)).collect::<Vec<_>>().join("\n")
}

/// Check everything; `env` looks variables up (for warnings about unset ones).
pub fn validate(
    loaded: Loaded,
    catalog: &dyn Catalog,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ValidPipeline, Invalid> {
    let mut v = Validator { loaded: &loaded, diags: Vec::new() };
    v.durations();
    v.pipeline_name();
    let index = v.ids();
    v.needs(&index);
    let cyclic = v.cycles(&index);
    let (env_refs, has_refs) = v.references(&index, !cyclic, catalog, env);
    v.kinds(catalog);

    let mut diags = v.diags;
    diags.sort_by_key(|d| (d.severity, d.span.map(|s| s.start), d.message.clone()));
    diags.dedup();
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(Invalid { loaded: Box::new(loaded), diagnostics: diags });
    }
    Ok(ValidPipeline { loaded, warnings: diags, env_refs, has_refs })
}

struct Validator<'a> {
    loaded: &'a Loaded,
    diags: Vec<Diagnostic>,
}

impl<'a> Validator<'a> {
    fn span(&self, path: &str) -> Option<Span> {
        self.loaded.source_map().nearest(path)
    }

    fn error(&mut self, path: &str, message: String) -> &mut Diagnostic {
        let span = self.span(path);
        self.diags.push(Diagnostic::error(message, span));
        self.diags.last_mut().unwrap()
    }

    fn pipeline_name(&mut self) {
        let name = &self.loaded.pipeline.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            self.error(
                "name",
                format!("pipeline name `{name}` must be non-empty and use only letters, digits, `-` and `_`"),
            );
        }
    }

    fn duration(&mut self, path: &str, text: Option<&str>, what: &str, allow_zero: bool) -> Option<Duration> {
        let text = text?;
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.error(path, format!("{what} `{text}` is zero")).label =
                    Some("a step needs some time to run".into());
                None
            }
            Ok(d) if d > MAX_TIMEOUT => {
                self.error(path, format!("{what} `{text}` is longer than 7 days"));
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                self.error(path, format!("{what} `{text}` is not a duration")).label =
                    Some("write e.g. \"90s\", \"5m\", \"1h30m\"".into());
                None
            }
        }
    }

    /// Every timeout and backoff, of the defaults and of each step, is a sensible duration.
    fn durations(&mut self) {
        let defaults = &self.loaded.pipeline.defaults;
        self.duration("defaults.timeout", defaults.timeout.as_deref(), "timeout", false);
        self.duration("defaults.retry_backoff", defaults.retry_backoff.as_deref(), "retry backoff", true);
        for (i, step) in self.loaded.pipeline.steps.iter().enumerate() {
            self.duration(&format!("steps[{i}].timeout"), step.timeout.as_deref(), "timeout", false);
            self.duration(&format!("steps[{i}].retry_backoff"), step.retry_backoff.as_deref(), "retry backoff", true);
        }
    }

    /// Ids are well formed and unique; returns id -> index of its first definition.
    fn ids(&mut self) -> HashMap<&'a str, usize> {
        let mut index: HashMap<&'a str, usize> = HashMap::new();
        let loaded: &'a Loaded = self.loaded;
        let steps = &loaded.pipeline.steps;
        for (i, step) in steps.iter().enumerate() {
            let path = format!("steps[{i}].id");
            let id = step.id.as_str();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                self.error(
                    &path,
                    format!("step id `{id}` must be non-empty and use only letters, digits, `-` and `_`"),
                );
            }
            if let Some(&first) = index.get(id) {
                let first_line = self
                    .span(&format!("steps[{first}].id"))
                    .map(|s| crate::diagnostic::line_col(&self.loaded.text, s.start).0);
                let d = self.error(&path, format!("duplicate step id `{id}`"));
                if let Some(line) = first_line {
                    d.label = Some(format!("first defined on line {line}"));
                }
            } else {
                index.insert(id, i);
            }
        }
        index
    }

    fn needs(&mut self, index: &HashMap<&str, usize>) {
        for (i, step) in self.loaded.pipeline.steps.iter().enumerate() {
            for (j, need) in step.needs.iter().enumerate() {
                let path = format!("steps[{i}].needs[{j}]");
                if *need == step.id {
                    self.error(&path, format!("`{}` needs itself", step.id));
                } else if !index.contains_key(need.as_str()) {
                    let suggestion = closest(need, index.keys().copied());
                    let d = self.error(&path, format!("`{}` needs unknown step `{need}`", step.id));
                    if let Some(s) = suggestion {
                        d.label = Some(format!("did you mean `{s}`?"));
                    }
                }
            }
        }
    }

    /// Reports every cycle of `needs`; true when there is one.
    fn cycles(&mut self, index: &HashMap<&str, usize>) -> bool {
        let steps = &self.loaded.pipeline.steps;
        let mut graph = DiGraph::<usize, ()>::with_capacity(steps.len(), steps.len());
        let nodes: Vec<_> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
        for (i, step) in steps.iter().enumerate() {
            for need in &step.needs {
                if let Some(&n) = index.get(need.as_str()) {
                    if n != i {
                        graph.add_edge(nodes[n], nodes[i], ());
                    }
                }
            }
        }
        let mut found = false;
        // Kosaraju's search is iterative: a chain of 100k steps must not overflow the stack.
        for scc in petgraph::algo::kosaraju_scc(&graph) {
            if scc.len() < 2 {
                continue;
            }
            found = true;
            let members: BTreeSet<usize> = scc.iter().map(|n| graph[*n]).collect();
            let start = *members.iter().next().unwrap();
            let cycle = cycle_through(steps, index, &members, start);
            let spelled: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
            let path = format!("steps[{start}].id");
            self.error(&path, format!("cycle in needs: {}", spelled.join(" -> "))).label =
                Some("each step runs before the next one; one of these `needs` must go".into());
        }
        found
    }

    /// Check `${...}` in every string field: syntax, and that output references name upstream steps.
    fn references(
        &mut self,
        index: &HashMap<&str, usize>,
        acyclic: bool,
        catalog: &dyn Catalog,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (EnvRefs, Vec<bool>) {
        let steps = &self.loaded.pipeline.steps;
        let mut env_refs = vec![Vec::new(); steps.len()];
        let mut has_refs = vec![false; steps.len()];
        for (i, step) in steps.iter().enumerate() {
            let mut fields = Vec::new();
            collect_strings(
                &serde_json::to_value(&step.kind).unwrap_or_default(),
                format!("steps[{i}].kind"),
                &mut fields,
            );
            for (k, v) in &step.env {
                fields.push((format!("steps[{i}].env.{k}"), v.clone()));
            }
            if let Some(w) = &step.working_dir {
                fields.push((format!("steps[{i}].working_dir"), w.to_string()));
            }
            for (path, text) in fields {
                if !text.contains("${") {
                    continue;
                }
                has_refs[i] = true;
                let pieces = match subst::parse(&text) {
                    Ok(p) => p,
                    Err(e) => {
                        self.error(&path, e.message);
                        continue;
                    }
                };
                for piece in pieces {
                    match piece {
                        Piece::Env(name) => env_refs[i].push((name.to_string(), self.span(&path))),
                        Piece::Output { node, key } => self.output_reference(i, &path, node, key, index, acyclic),
                        Piece::Text(_) => {}
                    }
                }
            }
        }
        for (k, v) in &self.loaded.pipeline.defaults.env {
            let path = format!("defaults.env.{k}");
            match subst::parse(v) {
                Err(e) => {
                    self.error(&path, e.message);
                }
                Ok(pieces) => {
                    for piece in pieces {
                        match piece {
                            Piece::Env(name) => {
                                let span = self.span(&path);
                                for (refs, flag) in env_refs.iter_mut().zip(has_refs.iter_mut()) {
                                    refs.push((name.to_string(), span));
                                    *flag = true;
                                }
                            }
                            Piece::Output { .. } => {
                                self.error(&path, "defaults cannot refer to step outputs".into());
                            }
                            Piece::Text(_) => {}
                        }
                    }
                }
            }
        }
        let mut warned = BTreeSet::new();
        for (refs, step) in env_refs.iter().zip(steps) {
            if !catalog.resolves_fields(step) {
                continue;
            }
            for (name, span) in refs {
                if env(name).is_none() && warned.insert((name.clone(), span.map(|s| s.start))) {
                    self.diags.push(Diagnostic::warning(format!("environment variable `{name}` is not set"), *span));
                }
            }
        }
        let env_refs = env_refs.into_iter().enumerate().filter(|(_, refs)| !refs.is_empty()).collect();
        (env_refs, has_refs)
    }

    fn output_reference(
        &mut self,
        i: usize,
        path: &str,
        node: &str,
        key: &str,
        index: &HashMap<&str, usize>,
        acyclic: bool,
    ) {
        let steps = &self.loaded.pipeline.steps;
        let step_id = node.split('/').next().unwrap_or(node);
        let Some(&target) = index.get(step_id) else {
            let d = self.error(path, format!("`{}` refers to output `{key}` of unknown step `{step_id}`", steps[i].id));
            if let Some(s) = closest(step_id, index.keys().copied()) {
                d.label = Some(format!("did you mean `{s}`?"));
            }
            return;
        };
        if acyclic && !Upstream::new(steps, index, i).contains(target) {
            self.error(
                path,
                format!("`{}` refers to output `{key}` of `{node}`, which is not upstream of it", steps[i].id),
            )
            .label = Some(format!("add `{step_id}` to the needs of `{}`", steps[i].id));
        }
    }

    fn kinds(&mut self, catalog: &dyn Catalog) {
        for (i, step) in self.loaded.pipeline.steps.iter().enumerate() {
            for (field, message) in catalog.check(&step.kind) {
                let path =
                    if field.is_empty() { format!("steps[{i}].kind") } else { format!("steps[{i}].kind.{field}") };
                self.error(&path, message);
            }
        }
    }
}

/// The closest name to `wrong`, if close enough to be a likely typo.
pub fn closest<'a>(wrong: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|n| (strsim::damerau_levenshtein(wrong, n), n))
        .filter(|(d, n)| *d <= (n.len().max(wrong.len()) / 3).max(1) || n.starts_with(wrong) || wrong.starts_with(n))
        .min()
        .map(|(_, n)| n)
}

/// A cycle through `start` inside a strongly connected set, in run order, closed (`a b c a`).
fn cycle_through(steps: &[Step], index: &HashMap<&str, usize>, members: &BTreeSet<usize>, start: usize) -> Vec<usize> {
    // Walk "needed by" edges (run order): from a step to the members that need it, until back at start.
    let dependents = |n: usize| -> Vec<usize> {
        members
            .iter()
            .copied()
            .filter(|&m| steps[m].needs.iter().any(|need| index.get(need.as_str()) == Some(&n)))
            .collect()
    };
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    fn dfs(
        at: usize,
        start: usize,
        path: &mut Vec<usize>,
        seen: &mut BTreeSet<usize>,
        dependents: &dyn Fn(usize) -> Vec<usize>,
    ) -> bool {
        for next in dependents(at) {
            if next == start {
                path.push(start);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if dfs(next, start, path, seen, dependents) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    dfs(start, start, &mut path, &mut seen, &dependents);
    path
}

/// Every string of a serialized step kind with its source path (enum variant names are transparent).
fn collect_strings(value: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::String(s) => out.push((path, s.clone())),
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_strings(v, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            let variant = map.len() == 1 && map.keys().next().is_some_and(|k| k.starts_with(char::is_uppercase));
            for (k, v) in map {
                let child = if variant { path.clone() } else { format!("{path}.{k}") };
                collect_strings(v, child, out);
            }
        }
        _ => {}
    }
}
