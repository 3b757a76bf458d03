//! A pipeline made of several files and parameters, resolved right after parsing so that validation, `plan`,
//! `graph` and `run` all see the values the run will use.
//!
//! - `include: ["datalake.ron"]` takes another pipeline file's parameters, defaults and steps (paths relative to
//!   the including file), before the file's own. Included files may include others; a file reached twice is taken
//!   once; a file that includes itself, directly or not, is an error that spells the cycle out.
//! - `parameters: {"account": (description: "...", default: "...")}` declares parameters; `values: {"account":
//!   "..."}` gives them values (the file given to runner has the last word over the files it includes).
//! - `${param:NAME}` in any string of `name`, `defaults` or a step is replaced by the value. Values (and defaults)
//!   may hold references themselves: `${ssm:/DataLake/${param:environment}/account_id}` becomes
//!   `${ssm:/DataLake/Prod/account_id}`, read from Parameter Store when the run starts.
//!
//! Problems with parameters (an unknown name, a value missing, two declarations, a cycle) are reported with every
//! other validation error, each at its position in the file where it is written; problems with the files (one
//! missing, an include cycle, bad RON in an included file) stop loading at once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::diagnostic::Diagnostic;
use crate::load::LoadError;
use crate::model::{Defaults, Pipeline, Step};
use crate::source_map::{SourceMap, Span};
use crate::validate::closest;

/// A file read through `include`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludedFile {
    /// As named in messages: the including file's directory joined with the `include` entry.
    pub path: PathBuf,
    pub text: String,
}

/// A pipeline with its includes taken in and its parameters replaced.
pub(crate) struct Composed {
    pub pipeline: Pipeline,
    pub included: Vec<IncludedFile>,
    /// Where each value of the composed pipeline is written, when other files were included (built now: the
    /// steps' paths differ from those of any one file).
    pub source_map: Option<SourceMap>,
    pub diagnostics: Vec<Diagnostic>,
}

/// One file of the pipeline.
struct File {
    path: PathBuf,
    canonical: PathBuf,
    text: String,
    pipeline: Pipeline,
}

/// Take in `pipeline`'s includes and replace its parameters. `text` is the file's; nothing is done (and nothing
/// is copied) for a pipeline with no includes, parameters or values.
pub(crate) fn compose(path: &Path, text: &str, pipeline: Pipeline) -> Result<Composed, LoadError> {
    if pipeline.include.is_empty()
        && pipeline.parameters.is_empty()
        && pipeline.values.is_empty()
        && !text.contains("${param:")
    {
        return Ok(Composed { pipeline, included: Vec::new(), source_map: None, diagnostics: Vec::new() });
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut reader = Reader {
        files: vec![File { path: path.to_path_buf(), canonical, text: text.to_string(), pipeline }],
        order: Vec::new(),
        chain: Vec::new(),
    };
    reader.visit(0)?;
    let Reader { files, order, .. } = reader;
    let mut composer = Composer::new(files, order);
    composer.merge();
    composer.resolve();
    let Composer { mut files, merged, map, diagnostics, .. } = composer;
    let source_map = (files.len() > 1).then_some(map.unwrap_or_default());
    let included = files.drain(1..).map(|f| IncludedFile { path: f.path, text: f.text }).collect();
    Ok(Composed { pipeline: merged, included, source_map, diagnostics })
}

/// Reads the included files, depth first.
struct Reader {
    files: Vec<File>,
    /// Files in the order their content is taken: a file's includes before the file.
    order: Vec<usize>,
    /// The files being read, from the one given to runner down.
    chain: Vec<usize>,
}

impl Reader {
    fn visit(&mut self, f: usize) -> Result<(), LoadError> {
        self.chain.push(f);
        let includes = self.files[f].pipeline.include.clone();
        for (k, entry) in includes.iter().enumerate() {
            let at = format!("include[{k}]");
            let dir = self.files[f].path.parent().map(Path::to_path_buf).unwrap_or_default();
            let path = dir.join(entry);
            let canonical = std::fs::canonicalize(&path).map_err(|e| {
                self.error(f, &at, format!("cannot read included file {}: {}", path.display(), io_reason(&e)), None)
            })?;
            if let Some(pos) = self.chain.iter().position(|&c| self.files[c].canonical == canonical) {
                let mut names: Vec<String> =
                    self.chain[pos..].iter().map(|&c| self.files[c].path.display().to_string()).collect();
                names.push(path.display().to_string());
                let label = "this include closes the cycle: one of these files must not include the next";
                return Err(self.error(f, &at, format!("include cycle: {}", names.join(" -> ")), Some(label)));
            }
            if self.files.iter().any(|x| x.canonical == canonical) {
                // Reached through another include already: its steps are in once.
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                self.error(f, &at, format!("cannot read included file {}: {}", path.display(), io_reason(&e)), None)
            })?;
            let pipeline = crate::load::parse_ron(&path, &text)?;
            self.files.push(File { path, canonical, text, pipeline });
            self.visit(self.files.len() - 1)?;
        }
        self.chain.pop();
        self.order.push(f);
        Ok(())
    }

    /// An error at `at` (a source path) in file `f`, which stops loading.
    fn error(&self, f: usize, at: &str, message: String, label: Option<&str>) -> LoadError {
        let file = &self.files[f];
        let span = SourceMap::index(&file.text).nearest(at);
        let mut diagnostic = Diagnostic::error(message, span);
        diagnostic.label = label.map(str::to_string);
        LoadError::Syntax { path: file.path.clone(), text: file.text.clone(), diagnostic: Box::new(diagnostic) }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        _ => e.to_string().to_lowercase(),
    }
}

/// Merges the files and resolves the parameters.
struct Composer {
    files: Vec<File>,
    order: Vec<usize>,
    merged: Pipeline,
    /// The composed source map (several files), or the one file's, built when first needed.
    map: Option<SourceMap>,
    /// Which file declared each parameter, and gave each value.
    declared_in: HashMap<String, usize>,
    diagnostics: Vec<Diagnostic>,
}

impl Composer {
    fn new(files: Vec<File>, order: Vec<usize>) -> Composer {
        let map = (files.len() > 1).then(|| composed_map(&files, &order));
        Composer { files, order, merged: empty_pipeline(), map, declared_in: HashMap::new(), diagnostics: Vec::new() }
    }

    fn map(&mut self) -> &SourceMap {
        let files = &self.files;
        self.map.get_or_insert_with(|| SourceMap::index(&files[0].text))
    }

    fn span(&mut self, path: &str) -> Option<Span> {
        self.map().nearest(path)
    }

    /// The span of `needle` inside the value at `path` (a reference inside a longer string), else the value's.
    fn span_of(&mut self, path: &str, needle: &str) -> Option<Span> {
        let span = self.span(path)?;
        let text = &self.files[span.file as usize].text;
        let within = text.get(span.start..span.end)?;
        Some(match within.find(needle) {
            Some(at) => Span { file: span.file, start: span.start + at, end: span.start + at + needle.len() },
            None => span,
        })
    }

    fn error(&mut self, span: Option<Span>, message: String, label: Option<String>) {
        let mut d = Diagnostic::error(message, span);
        d.label = label;
        self.diagnostics.push(d);
    }

    /// The files' content in one pipeline: included files first, the outer file's name, defaults and values
    /// winning over the inner ones'.
    fn merge(&mut self) {
        let order = self.order.clone();
        for f in order {
            // Every field, so that a new one is merged too (or the build says so).
            let Pipeline { name, include, parameters, values, defaults, steps, notifications } =
                std::mem::replace(&mut self.files[f].pipeline, empty_pipeline());
            if f == 0 {
                self.merged.include = include;
            }
            if !name.is_empty() {
                self.merged.name = name;
            }
            merge_defaults(&mut self.merged.defaults, defaults);
            for (name, parameter) in parameters {
                if let Some(&first) = self.declared_in.get(&name) {
                    let span = self.span(&format!("parameters.{name}"));
                    let first_file = self.files[first].path.display().to_string();
                    self.error(
                        span,
                        format!("parameter `{name}` is declared twice"),
                        Some(format!("first declared in {first_file}; give its value in `values` instead")),
                    );
                    continue;
                }
                self.declared_in.insert(name.clone(), f);
                self.merged.parameters.insert(name, parameter);
            }
            self.merged.values.extend(values);
            self.merged.steps.extend(steps);
            self.merged.notifications.extend(notifications);
        }
    }

    /// Every parameter's value, then every `${param:...}` of the name, the defaults and the steps replaced.
    fn resolve(&mut self) {
        let values = self.parameter_values();
        // What each parameter came to, for `plan` to show (and a restart to compare).
        self.merged.values = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let name = std::mem::take(&mut self.merged.name);
        self.merged.name = self.replace_in_text(&name, "name", &values);
        let defaults = std::mem::take(&mut self.merged.defaults);
        self.merged.defaults = self.replace_in(defaults, "defaults", &values);
        let steps = std::mem::take(&mut self.merged.steps);
        self.merged.steps = steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| self.replace_in::<Step>(s, &format!("steps[{i}]"), &values))
            .collect();
    }

    /// The value of every declared parameter that has one, its own references resolved.
    fn parameter_values(&mut self) -> HashMap<String, String> {
        let declared: Vec<String> = self.merged.parameters.keys().cloned().collect();
        let given: Vec<String> = self.merged.values.keys().cloned().collect();
        for name in given {
            if !self.merged.parameters.contains_key(&name) {
                let span = self.span(&format!("values.{name}"));
                let label = closest(&name, declared.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some("declare it in `parameters`".to_string()));
                self.error(span, format!("`values` gives unknown parameter `{name}`"), label);
            }
        }
        let main = self.files[0].path.display().to_string();
        let mut raw: HashMap<String, (String, String)> = HashMap::new();
        for name in &declared {
            let parameter = &self.merged.parameters[name];
            match (self.merged.values.get(name), &parameter.default) {
                (Some(v), _) => {
                    raw.insert(name.clone(), (v.clone(), format!("values.{name}")));
                }
                (None, Some(d)) => {
                    raw.insert(name.clone(), (d.clone(), format!("parameters.{name}.default")));
                }
                (None, None) => {
                    let what = parameter.description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                    let span = self.span(&format!("parameters.{name}"));
                    self.error(
                        span,
                        format!("parameter `{name}`{what} has no value"),
                        Some(format!("it has no default: give it in `values` of {main}")),
                    );
                }
            }
        }
        let mut resolved: HashMap<String, Option<String>> = HashMap::new();
        for name in &declared {
            let mut chain = Vec::new();
            self.value_of(name, &raw, &declared, &mut resolved, &mut chain);
        }
        resolved.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
    }

    /// Parameter `name`'s value with the parameters it refers to replaced; `None` when it has none.
    fn value_of(
        &mut self,
        name: &str,
        raw: &HashMap<String, (String, String)>,
        declared: &[String],
        resolved: &mut HashMap<String, Option<String>>,
        chain: &mut Vec<String>,
    ) -> Option<String> {
        if let Some(v) = resolved.get(name) {
            return v.clone();
        }
        let (text, path) = raw.get(name)?.clone();
        if let Some(pos) = chain.iter().position(|c| c == name) {
            let mut cycle: Vec<&str> = chain[pos..].iter().map(String::as_str).collect();
            cycle.push(name);
            let span = self.span(&path);
            self.error(
                span,
                format!("parameters refer to each other in a cycle: {}", cycle.join(" -> ")),
                Some("one of these values must not use the next parameter".into()),
            );
            resolved.insert(name.to_string(), None);
            return None;
        }
        chain.push(name.to_string());
        let mut ok = true;
        let out = replace_parameters(&text, &mut |reference| {
            if !declared.iter().any(|d| d == reference) {
                ok = false;
                let label =
                    closest(reference, declared.iter().map(String::as_str)).map(|s| format!("did you mean `{s}`?"));
                let span = self.span_of(&path, &format!("${{param:{reference}}}"));
                self.error(span, format!("unknown parameter `{reference}`"), label);
                return None;
            }
            let v = self.value_of(reference, raw, declared, resolved, chain);
            ok &= v.is_some();
            v
        });
        chain.pop();
        let value = ok.then_some(out);
        resolved.insert(name.to_string(), value.clone());
        value
    }

    /// `value` with every `${param:...}` of its strings replaced (through JSON: every field of every kind).
    fn replace_in<T: serde::Serialize + serde::de::DeserializeOwned>(
        &mut self,
        value: T,
        path: &str,
        values: &HashMap<String, String>,
    ) -> T {
        let Ok(mut json) = serde_json::to_value(&value) else { return value };
        let mut changed = false;
        let mut strings = Vec::new();
        collect_string_paths(&json, path.to_string(), &mut strings);
        if strings.iter().all(|(_, s)| !s.contains("${param:")) {
            return value;
        }
        let mut replaced = strings.into_iter();
        for_each_string(&mut json, &mut |s| {
            let (at, text) = replaced.next().unwrap_or_default();
            if text.contains("${param:") {
                *s = self.replace_in_text(&text, &at, values);
                changed = true;
            }
        });
        if !changed {
            return value;
        }
        serde_json::from_value(json).unwrap_or(value)
    }

    fn replace_in_text(&mut self, text: &str, path: &str, values: &HashMap<String, String>) -> String {
        if !text.contains("${param:") {
            return text.to_string();
        }
        let declared: Vec<String> = self.merged.parameters.keys().cloned().collect();
        replace_parameters(text, &mut |reference| {
            if let Some(v) = values.get(reference) {
                return Some(v.clone());
            }
            if !declared.iter().any(|d| d == reference) {
                let label = closest(reference, declared.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some("declare it in `parameters`".to_string()));
                let span = self.span_of(path, &format!("${{param:{reference}}}"));
                self.error(span, format!("unknown parameter `{reference}`"), label);
            }
            // Declared but without a value: said once, at the declaration.
            None
        })
    }
}

fn empty_pipeline() -> Pipeline {
    Pipeline {
        name: String::new(),
        include: Vec::new(),
        parameters: BTreeMap::new(),
        values: BTreeMap::new(),
        defaults: Defaults::default(),
        steps: Vec::new(),
        notifications: Vec::new(),
    }
}

/// `outer`'s settings over `inner`'s (environment variables merged, the outer file's winning).
fn merge_defaults(inner: &mut Defaults, outer: Defaults) {
    let Defaults { env, working_dir, timeout, retries, retry_backoff, max_parallel, aws_endpoint_url } = outer;
    inner.env.extend(env);
    inner.working_dir = working_dir.or(inner.working_dir.take());
    inner.timeout = timeout.or(inner.timeout.take());
    inner.retries = retries.or(inner.retries);
    inner.retry_backoff = retry_backoff.or(inner.retry_backoff.take());
    inner.max_parallel = max_parallel.or(inner.max_parallel);
    inner.aws_endpoint_url = aws_endpoint_url.or(inner.aws_endpoint_url.take());
}

/// Replace each `${param:NAME}` of `text` with `value(NAME)` (left as written when it gives `None`); `$${` stays,
/// for the later substitution to read as a literal `${`.
pub fn replace_parameters(text: &str, value: &mut dyn FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let escape = rest.find("$${");
        let reference = rest.find("${param:");
        match (escape, reference) {
            (Some(e), r) if r.is_none_or(|r| e < r) => {
                out.push_str(&rest[..e + 3]);
                rest = &rest[e + 3..];
            }
            (_, Some(r)) => {
                out.push_str(&rest[..r]);
                let after = &rest[r + "${param:".len()..];
                match after.find('}') {
                    Some(close) if crate::subst::is_parameter_name(&after[..close]) => {
                        let name = &after[..close];
                        match value(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&rest[r..r + "${param:".len() + close + 1]),
                        }
                        rest = &after[close + 1..];
                    }
                    // Malformed: left for validation to report.
                    _ => {
                        out.push_str("${param:");
                        rest = after;
                    }
                }
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// The composed pipeline's source map: every file's, with step indices moved to where the steps landed and
/// spans naming their file. Where files give the same value (`name`, a default, a value), the outer file's wins,
/// as it does in the pipeline.
fn composed_map(files: &[File], order: &[usize]) -> SourceMap {
    let mut map = SourceMap::default();
    let mut base = 0;
    for &f in order {
        let own = SourceMap::index(&files[f].text);
        for (path, span) in own.entries() {
            let span = Span { file: f as u32, ..span };
            let moved = match path.strip_prefix("steps[").and_then(|r| r.split_once(']')) {
                Some((index, tail)) => match index.parse::<usize>() {
                    Ok(i) => format!("steps[{}]{tail}", i + base),
                    Err(_) => continue,
                },
                None if path == "steps" && f != 0 => continue,
                None => path.to_string(),
            };
            map.insert(moved, span);
        }
        base += files[f].pipeline.steps.len();
    }
    map
}

/// Every string of a serialized value with its source path (enum variant names are transparent), in the order
/// [`for_each_string`] visits them.
fn collect_string_paths(value: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::String(s) => out.push((path, s.clone())),
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_string_paths(v, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            let variant = map.len() == 1 && map.keys().next().is_some_and(|k| k.starts_with(char::is_uppercase));
            for (k, v) in map {
                let child = if variant { path.clone() } else { format!("{path}.{k}") };
                collect_string_paths(v, child, out);
            }
        }
        _ => {}
    }
}

fn for_each_string(value: &mut serde_json::Value, f: &mut dyn FnMut(&mut String)) {
    crate::subst::for_each_string(value, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_replaced_and_escapes_kept() {
        let mut value = |name: &str| (name == "env").then(|| "Prod".to_string());
        assert_eq!(replace_parameters("/DataLake/${param:env}/id", &mut value), "/DataLake/Prod/id");
        assert_eq!(replace_parameters("$${param:env} ${param:env}", &mut value), "$${param:env} Prod");
        assert_eq!(replace_parameters("${param:other}", &mut value), "${param:other}");
        assert_eq!(replace_parameters("${param:", &mut value), "${param:");
        assert_eq!(
            replace_parameters("${ssm:/DataLake/${param:env}/account_id}", &mut value),
            "${ssm:/DataLake/Prod/account_id}"
        );
    }
}
