//! Semantic checks of a parsed pipeline, all errors at once, sorted by position. No network, no file system.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use petgraph::graph::DiGraph;

use crate::diagnostic::{elide, Diagnostic, Severity, MAX_QUOTED};
use crate::load::Loaded;
use crate::source_map::Span;
use crate::step::{Catalog, Upstream};
use crate::subst::{self, Piece};

/// The longest timeout that still makes sense for one attempt of a step.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pipeline name, step id, stack name or asset id, in characters. Each becomes a file or directory
/// name (runs, logs, locks, workspaces: 255 bytes at most on Linux, the run id adds 21) and a column of `plan`,
/// `status` and `history`; 128 is also CloudFormation's limit for a stack name.
pub const MAX_NAME: usize = 128;

/// A pipeline that passed validation.
#[derive(Debug, Clone)]
pub struct ValidPipeline {
    pub loaded: Loaded,
    pub warnings: Vec<Diagnostic>,
    /// `${env:NAME}` variables that are not set, one warning each, kept apart from `warnings`: `validate` and
    /// `plan` show them, `run` makes them errors instead ([`ValidPipeline::env_refs`]), and commands that only read
    /// saved runs say nothing of them.
    pub unset_env: Vec<Diagnostic>,
    /// Every `${env:NAME}` of the steps that hold any, with where it is written.
    pub env_refs: EnvRefs,
    /// Whether a step's fields hold any `${...}` (substitution can be skipped when not).
    pub has_refs: Vec<bool>,
    /// Every `${ssm:...}` of the pipeline, with where it is first written: read when a run starts.
    pub ssm_refs: SsmRefs,
}

/// Each `${ssm:...}` reference of a pipeline and where it is first written.
pub type SsmRefs = BTreeMap<subst::ParameterRef, Option<Span>>;

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
    diagnostics
        .iter()
        .map(|d| {
            let (file, text) = loaded.file_of(d.span);
            d.render(&file.display().to_string(), text)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Check everything; `env` looks variables up (for warnings about unset ones).
pub fn validate(
    loaded: Loaded,
    catalog: &dyn Catalog,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ValidPipeline, Invalid> {
    let mut v = Validator { loaded: &loaded, diags: loaded.diagnostics.clone(), ssm_refs: SsmRefs::new() };
    v.durations();
    v.pipeline_name();
    let index = v.ids();
    v.needs(&index);
    let cyclic = v.cycles(&index);
    let (env_refs, has_refs, mut unset_env) = v.references(&index, !cyclic, catalog, env);
    v.kinds(catalog);

    let ssm_refs = std::mem::take(&mut v.ssm_refs);
    let mut diags = v.diags;
    diags.sort_by_key(|d| (d.severity, d.span, d.message.clone()));
    diags.dedup();
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(Invalid { loaded: Box::new(loaded), diagnostics: diags });
    }
    unset_env.sort_by_key(|d| (d.span.map(|s| s.start), d.message.clone()));
    Ok(ValidPipeline { loaded, warnings: diags, unset_env, env_refs, has_refs, ssm_refs })
}

struct Validator<'a> {
    loaded: &'a Loaded,
    diags: Vec<Diagnostic>,
    ssm_refs: SsmRefs,
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
        if name.is_empty() {
            self.error("name", "the pipeline has no `name` (it names the run state under .runner/)".into()).label =
                Some("give it one: `name: \"prod\"`".into());
        } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            self.error(
                "name",
                format!(
                    "pipeline name `{}` must be non-empty and use only letters, digits, `-` and `_`",
                    elide(name, MAX_QUOTED)
                ),
            );
        } else if let Some(message) = too_long("pipeline name", name) {
            self.error("name", message);
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
                    format!(
                        "step id `{}` must be non-empty and use only letters, digits, `-` and `_`",
                        elide(id, MAX_QUOTED)
                    ),
                );
            } else if let Some(message) = too_long("step id", id) {
                self.error(&path, message);
            }
            if let Some(&first) = index.get(id) {
                let here = self.span(&path).map_or(0, |s| s.file);
                let first_at = self.span(&format!("steps[{first}].id")).map(|s| {
                    let (file, text) = self.loaded.file_of(Some(s));
                    let line = crate::diagnostic::line_col(text, s.start).0;
                    if s.file == here {
                        format!("line {line}")
                    } else {
                        format!("{}:{line}", file.display())
                    }
                });
                let d = self.error(&path, format!("duplicate step id `{}`", elide(id, MAX_QUOTED)));
                if let Some(at) = first_at {
                    d.label = Some(format!("first defined on {at}"));
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
                let id = elide(&step.id, MAX_QUOTED);
                if *need == step.id {
                    self.error(&path, format!("`{id}` needs itself"));
                } else if !index.contains_key(need.as_str()) {
                    let suggestion = closest(need, index.keys().copied());
                    let d = self.error(&path, format!("`{id}` needs unknown step `{}`", elide(need, MAX_QUOTED)));
                    if let Some(s) = suggestion {
                        d.label = Some(format!("did you mean `{s}`?"));
                    }
                }
            }
        }
    }

    /// Reports every cycle of `needs`, spelled out in run order from its step first in the file, at the `needs`
    /// entry of that step that closes it; true when there is one.
    fn cycles(&mut self, index: &HashMap<&str, usize>) -> bool {
        let steps = &self.loaded.pipeline.steps;
        let needs = |i: usize| -> Vec<usize> {
            steps[i].needs.iter().filter_map(|n| index.get(n.as_str()).copied()).filter(|&n| n != i).collect()
        };
        let cycles = find_cycles(steps.len(), needs);
        for cycle in &cycles {
            // `cycle` in needs order: cycle[0] needs cycle[1] ... needs cycle[0]. Shown in run order.
            let (start, closing) = (cycle[0], cycle[1]);
            let spelled = spell_cycle(cycle.iter().rev().map(|&i| steps[i].id.as_str()));
            let j = steps[start].needs.iter().position(|n| index.get(n.as_str()) == Some(&closing)).unwrap_or(0);
            let path = format!("steps[{start}].needs[{j}]");
            self.error(&path, format!("cycle in needs: {spelled}")).label =
                Some("this need closes the cycle; one of the `needs` in it must go".into());
        }
        !cycles.is_empty()
    }

    /// Check `${...}` in every string field: syntax, and that output references name upstream steps.
    fn references(
        &mut self,
        index: &HashMap<&str, usize>,
        acyclic: bool,
        catalog: &dyn Catalog,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (EnvRefs, Vec<bool>, Vec<Diagnostic>) {
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
                if text.contains("${param:") {
                    // A parameter left unresolved: composing reported it (unknown, or no value).
                    continue;
                }
                let pieces = match subst::parse(&text) {
                    Ok(p) => p,
                    Err(e) => {
                        self.error(&path, e.message);
                        continue;
                    }
                };
                for piece in pieces {
                    match piece {
                        Piece::Env(name) => {
                            let span = self.reference_span(&path, &text, name, "${env:".len(), name.len() + 1);
                            env_refs[i].push((name.to_string(), span))
                        }
                        Piece::Output { node, key } => {
                            let after = offset_in(&text, key) + key.len() + 1 - offset_in(&text, node);
                            let span = self.reference_span(&path, &text, node, "${steps.".len(), after);
                            self.output_reference(i, span, node, key, index, acyclic)
                        }
                        Piece::Ssm(r) => {
                            let span = self.reference_span(&path, &text, r.name, "${ssm:".len(), ssm_length(&text, r));
                            self.ssm_refs.entry(r.to_owned()).or_insert(span);
                        }
                        // Reported while composing (unknown, or without a value).
                        Piece::Param(_) | Piece::Text(_) => {}
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
                                let span = self.reference_span(&path, v, name, "${env:".len(), name.len() + 1);
                                for (refs, flag) in env_refs.iter_mut().zip(has_refs.iter_mut()) {
                                    refs.push((name.to_string(), span));
                                    *flag = true;
                                }
                            }
                            Piece::Output { .. } => {
                                self.error(&path, "defaults cannot refer to step outputs".into());
                            }
                            Piece::Ssm(r) => {
                                let span = self.reference_span(&path, v, r.name, "${ssm:".len(), ssm_length(v, r));
                                self.ssm_refs.entry(r.to_owned()).or_insert(span);
                                has_refs.iter_mut().for_each(|flag| *flag = true);
                            }
                            Piece::Param(_) | Piece::Text(_) => {}
                        }
                    }
                }
            }
        }
        let mut warned = BTreeSet::new();
        let mut unset = Vec::new();
        for (refs, step) in env_refs.iter().zip(steps) {
            if !catalog.resolves_fields(step) {
                continue;
            }
            for (name, span) in refs {
                if env(name).is_none() && warned.insert((name.clone(), span.map(|s| s.start))) {
                    unset.push(Diagnostic::warning(format!("environment variable `{name}` is not set"), *span));
                }
            }
        }
        let env_refs = env_refs.into_iter().enumerate().filter(|(_, refs)| !refs.is_empty()).collect();
        (env_refs, has_refs, unset)
    }

    /// Where a `${...}` reference is written: `inner` is a part of the field's `text` that starts `before` bytes
    /// after the `$` and ends `after` bytes before the reference's end. The field's whole value when the
    /// reference cannot be placed inside it (a string with escapes that do not map back).
    fn reference_span(&self, path: &str, text: &str, inner: &str, before: usize, after: usize) -> Option<Span> {
        let literal = self.loaded.source_map().get(path);
        let start = offset_in(text, inner).checked_sub(before);
        let inside = literal.zip(start).and_then(|(literal, start)| {
            let (_, file_text) = self.loaded.file_of(Some(literal));
            let from = crate::source_map::literal_offset(file_text, literal, start)?;
            let to = crate::source_map::literal_offset(file_text, literal, start + before + after)?;
            Some(Span { file: literal.file, start: from, end: to })
        });
        inside.or_else(|| self.span(path))
    }

    fn output_reference(
        &mut self,
        i: usize,
        span: Option<Span>,
        node: &str,
        key: &str,
        index: &HashMap<&str, usize>,
        acyclic: bool,
    ) {
        let steps = &self.loaded.pipeline.steps;
        let step_id = node.split('/').next().unwrap_or(node);
        let (id, key) = (elide(&steps[i].id, MAX_QUOTED), elide(key, MAX_QUOTED));
        let Some(&target) = index.get(step_id) else {
            let mut d = Diagnostic::error(
                format!("`{id}` refers to output `{key}` of unknown step `{}`", elide(step_id, MAX_QUOTED)),
                span,
            );
            if let Some(s) = closest(step_id, index.keys().copied()) {
                d.label = Some(format!("did you mean `{s}`?"));
            }
            self.diags.push(d);
            return;
        };
        if acyclic && !Upstream::new(steps, index, i).contains(target) {
            let message = format!(
                "`{id}` refers to output `{key}` of `{}`, which is not upstream of it",
                elide(node, MAX_QUOTED)
            );
            self.diags
                .push(Diagnostic::error(message, span).with_label(format!("add `{step_id}` to the needs of `{id}`")));
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

/// `what` (a name that becomes a file name and a column) is longer than [`MAX_NAME`]: the message saying so.
pub fn too_long(what: &str, name: &str) -> Option<String> {
    let count = name.chars().count();
    (count > MAX_NAME).then(|| {
        format!("{what} `{}` is {count} characters long: at most {MAX_NAME} are allowed", elide(name, MAX_QUOTED))
    })
}

/// Byte offset of `part`, a slice of `text`, in `text`.
/// The length of a `${ssm:...}` reference after `${ssm:`: its name, its `@REGION`, the closing `}`.
fn ssm_length(text: &str, r: subst::StoreRef) -> usize {
    match r.region {
        Some(region) => offset_in(text, region) + region.len() + 1 - offset_in(text, r.name),
        None => r.name.len() + 1,
    }
}

fn offset_in(text: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize).min(text.len())
}

/// The closest name to `wrong`, if close enough to be a likely typo.
pub fn closest<'a>(wrong: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    // The distance costs the product of the lengths: a name far longer than any valid one has no close match.
    if wrong.len() > 4 * MAX_NAME {
        return None;
    }
    names
        .filter(|n| n.len() <= 4 * MAX_NAME)
        .map(|n| (strsim::damerau_levenshtein(wrong, n), n))
        .filter(|(d, n)| *d <= (n.len().max(wrong.len()) / 3).max(1) || n.starts_with(wrong) || wrong.starts_with(n))
        .min()
        .map(|(_, n)| n)
}

/// Every cycle of a graph of `count` items where `needs(i)` lists what item `i` needs (no item needing itself):
/// one per strongly connected set, through its smallest item, shortest, in needs order and closed
/// (`[a, c, b, a]`: `a` needs `c`, `c` needs `b`, `b` needs `a`), sorted by that item. Iterative throughout: a
/// cycle of 100k steps is found without deep recursion.
pub fn find_cycles(count: usize, needs: impl Fn(usize) -> Vec<usize>) -> Vec<Vec<usize>> {
    let mut graph = DiGraph::<usize, ()>::with_capacity(count, count);
    let nodes: Vec<_> = (0..count).map(|i| graph.add_node(i)).collect();
    let mut edges: Vec<Vec<usize>> = Vec::with_capacity(count);
    for i in 0..count {
        let mut out = needs(i);
        out.retain(|&n| n != i && n < count);
        for &n in &out {
            graph.add_edge(nodes[i], nodes[n], ());
        }
        edges.push(out);
    }
    let mut component = vec![usize::MAX; count];
    let mut cycles = Vec::new();
    // Kosaraju's search is iterative: a chain of 100k steps must not overflow the stack.
    for (c, scc) in petgraph::algo::kosaraju_scc(&graph).into_iter().enumerate() {
        if scc.len() < 2 {
            continue;
        }
        for n in &scc {
            component[graph[*n]] = c;
        }
        let start = scc.iter().map(|n| graph[*n]).min().unwrap_or(0);
        // Breadth first from `start` inside the set, until an item that needs `start`.
        let mut parent: HashMap<usize, usize> = HashMap::from([(start, start)]);
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        'search: while let Some(at) = queue.pop_front() {
            for &next in &edges[at] {
                if next == start {
                    last = Some(at);
                    break 'search;
                }
                if component[next] == c && !parent.contains_key(&next) {
                    parent.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
        let Some(mut at) = last else { continue };
        let mut cycle = vec![start];
        while at != start {
            cycle.push(at);
            at = parent[&at];
        }
        cycle.push(start);
        let last = cycle.len() - 1;
        cycle[1..last].reverse();
        // cycle = [start, p1, ..., w, start] with start needing p1.
        cycles.push(cycle);
    }
    cycles.sort();
    cycles
}

/// A closed cycle of names as `a -> b -> c -> a`; a long one keeps its first and last ten links.
pub fn spell_cycle<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let count = names.len();
    let names: Vec<String> = names.map(|n| elide(n, MAX_QUOTED).into_owned()).collect();
    if count <= 21 {
        return names.join(" -> ");
    }
    format!("{} -> … {} more … -> {}", names[..10].join(" -> "), count - 20, names[count - 10..].join(" -> "))
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
