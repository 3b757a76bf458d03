//! Reading a pipeline file: RON + serde, with an index of where every value sits.

use std::path::{Path, PathBuf};

use crate::compose::IncludedFile;
use crate::diagnostic::{offset_of, Diagnostic};
use crate::model::Pipeline;
use crate::source_map::{SourceMap, Span};

/// A pipeline file as read, with the files it includes, and what is needed to point into them.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub text: String,
    /// The pipeline composed from the file and its includes, parameters replaced.
    pub pipeline: Pipeline,
    /// Files read through `include`, in the order read: a [`Span`] with `file: k` points into `included[k - 1]`.
    pub included: Vec<IncludedFile>,
    /// Errors found while composing (parameters unknown or without a value), reported with validation's.
    pub diagnostics: Vec<Diagnostic>,
    /// Built on first use: only diagnostics need it, and it costs about as much memory as the model.
    source_map: std::sync::OnceLock<SourceMap>,
}

impl Loaded {
    /// Where each value sits in the text.
    pub fn source_map(&self) -> &SourceMap {
        self.source_map.get_or_init(|| SourceMap::index(&self.text))
    }

    /// The name and text of the file a span points into.
    pub fn file_of(&self, span: Option<Span>) -> (&Path, &str) {
        match span.map_or(0, |s| s.file as usize) {
            0 => (&self.path, &self.text),
            k => self.included.get(k - 1).map_or((&self.path, &self.text), |f| (&f.path, &f.text)),
        }
    }

    /// Drop the text and its index once no diagnostic will point into the file (before a run's walk): together
    /// they are about as large as the model. A diagnostic made after this has no position.
    pub fn release_source(&mut self) {
        self.text = String::new();
        self.included.iter_mut().for_each(|f| f.text = String::new());
        self.source_map = std::sync::OnceLock::new();
    }
}

/// Why a file could not be read as a pipeline.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// Bad RON syntax or shape: the first such error, with its position.
    #[error("{}", diagnostic.message)]
    Syntax { path: PathBuf, text: String, diagnostic: Box<Diagnostic> },
}

impl LoadError {
    /// The error as people read it.
    pub fn render(&self) -> String {
        match self {
            LoadError::Io { .. } => format!("error: {self}\n"),
            LoadError::Syntax { path, text, diagnostic } => {
                format!("{}\n1 error in {}\n", diagnostic.render(&path.display().to_string(), text), path.display())
            }
        }
    }
}

/// The RON options pipeline files are read with: `Option` fields take bare values.
pub fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(
        ron::extensions::Extensions::IMPLICIT_SOME | ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES,
    )
}

/// Read and parse a pipeline file. A file that is not UTF-8 is a syntax error at its first bad byte.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = std::fs::read(path)
        .map_err(|e| LoadError::Io { path: path.to_path_buf(), message: e.to_string().to_lowercase() })?;
    parse_bytes(path, bytes)
}

/// Parse a pipeline from the bytes of a file; `path` only names it in messages.
pub fn parse_bytes(path: &Path, bytes: Vec<u8>) -> Result<Loaded, LoadError> {
    let text = String::from_utf8(bytes).map_err(|e| not_utf8(path, e))?;
    parse(path, text)
}

/// The first byte that is not UTF-8, pointed at in the text as far as it reads (bad bytes shown as `\u{fffd}`,
/// which is what the caret sits under).
fn not_utf8(path: &Path, e: std::string::FromUtf8Error) -> LoadError {
    let at = e.utf8_error().valid_up_to();
    let bytes = e.into_bytes();
    let byte = bytes[at];
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let span = Span::new(at, at + char::REPLACEMENT_CHARACTER.len_utf8());
    let diagnostic = Diagnostic::error(format!("the file is not valid UTF-8 (byte 0x{byte:02x})"), Some(span))
        .with_label("pipeline files are UTF-8 text: save it as UTF-8");
    LoadError::Syntax { path: path.to_path_buf(), text, diagnostic: Box::new(diagnostic) }
}

/// Parse a pipeline from text; `path` names it in messages, and the files it includes are read relative to it.
pub fn parse(path: &Path, text: String) -> Result<Loaded, LoadError> {
    let pipeline = parse_ron(path, &text)?;
    let composed = crate::compose::compose(path, &text, pipeline)?;
    let source_map = match composed.source_map {
        Some(map) => std::sync::OnceLock::from(map),
        None => std::sync::OnceLock::new(),
    };
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        pipeline: composed.pipeline,
        included: composed.included,
        diagnostics: composed.diagnostics,
        source_map,
    })
}

/// The RON of one pipeline file, as written (no includes taken in).
pub(crate) fn parse_ron(path: &Path, text: &str) -> Result<Pipeline, LoadError> {
    ron_options().from_str::<Pipeline>(text).map_err(|e| {
        let start = offset_of(text, e.span.start.line, e.span.start.col);
        let mut end = offset_of(text, e.span.end.line, e.span.end.col);
        if end <= start {
            end = start + text[start..].chars().next().map_or(0, char::len_utf8);
        }
        let message = unclosed(text, start).unwrap_or_else(|| in_pipeline_terms(&lower_first(&e.code.to_string())));
        let mut diagnostic = Box::new(Diagnostic::error(message, Some(Span::new(start, end))));
        diagnostic.label = suggestion(&diagnostic.message).map(|name| format!("did you mean `{name}`?"));
        LoadError::Syntax { path: path.to_path_buf(), text: text.to_string(), diagnostic }
    })
}

/// The enums of the pipeline model as a pipeline's author knows them (ron names the Rust type).
const ENUM_TERMS: &[(&str, &str)] = &[
    ("StepKind", "step kind"),
    ("GitReference", "git reference"),
    ("GitAuth", "git auth"),
    ("SecretValue", "secret value"),
    ("DeployRole", "deploy role"),
    ("DeployMethod", "deploy method"),
    ("Stacks", "kind of stacks"),
    ("PublishAssets", "kind of assets"),
    ("Notification", "notification"),
    ("NotifyOn", "notification event"),
    ("RunOn", "place to run"),
];

/// ron's "unexpected variant named `Shel` in enum `StepKind`, expected one of ..." as "unknown step kind `Shel`,
/// expected one of ...".
fn in_pipeline_terms(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unexpected variant named `") else { return message.to_string() };
    for (name, term) in ENUM_TERMS {
        if let Some((variant, tail)) = rest.split_once(&format!("` in enum `{name}`")) {
            return format!("unknown {term} `{variant}`{tail}");
        }
    }
    message.to_string()
}

/// A closing bracket where another one was due (`Step(... ]`: a `)` left out): ron says only "expected comma".
/// Names the bracket still open and where it was opened. Strings and comments are skipped.
fn unclosed(text: &str, at: usize) -> Option<String> {
    let found = text[at..].chars().next().filter(|c| matches!(c, ')' | ']' | '}'))?;
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut chars = text[..at].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
            }
            '/' if chars.peek().is_some_and(|&(_, n)| n == '/') => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => open.push((c, i)),
            ')' | ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    let &(opener, position) = open.last()?;
    let due = match opener {
        '(' => ')',
        '[' => ']',
        _ => '}',
    };
    if due == found {
        return None;
    }
    // What the bracket opened: `Step(`, `Shell(`, or the bracket alone.
    let name: String = text[..position].chars().rev().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    let name: String = name.chars().rev().collect();
    let (line, col) = crate::diagnostic::line_col(text, position);
    Some(format!("expected `,` or `{due}` to close `{name}{opener}` (line {line}, column {col}), found `{found}`"))
}

/// For ron's "unexpected field named `comands` in `Shell`, expected one of `commands`, `program`, or `args`": the
/// expected name closest to the one written, if one is close.
fn suggestion(message: &str) -> Option<&str> {
    let (head, expected) = message.split_once(", expected")?;
    let written = head.split('`').nth(1)?;
    let names = expected.split('`').skip(1).step_by(2);
    crate::validate::closest(written, names).filter(|name| *name != written)
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if !chars.clone().next().is_some_and(|n| n.is_uppercase()) => c.to_lowercase().chain(chars).collect(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_error(text: &str) -> (String, usize, usize) {
        match parse(Path::new("p.ron"), text.to_string()) {
            Err(LoadError::Syntax { text, diagnostic, .. }) => {
                let (l, c) = crate::diagnostic::line_col(&text, diagnostic.span.unwrap().start);
                (diagnostic.message, l, c)
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn a_left_out_bracket_names_the_one_still_open_and_where() {
        let text = "Pipeline(name: \"x\", steps: [\n  Step(id: \"a)\", kind: Shell(commands: [\"true\"])]\n)";
        let (msg, line, col) = syntax_error(text);
        assert_eq!(msg, "expected `,` or `)` to close `Step(` (line 2, column 7), found `]`");
        assert_eq!((line, col), (2, 49));
    }

    #[test]
    fn an_unknown_step_kind_is_said_in_pipeline_terms() {
        let (msg, _, _) = syntax_error("Pipeline(name: \"x\", steps: [Step(id: \"a\", kind: Shel(commands: []))])");
        assert!(msg.starts_with("unknown step kind `Shel`, expected one of `Source`, `Shell`"), "{msg}");
        assert!(!msg.contains("StepKind"), "{msg}");
    }

    #[test]
    fn unknown_field_is_reported_at_its_line() {
        let (msg, line, _) = syntax_error("Pipeline(\n  name: \"p\",\n  stepz: [],\n)");
        assert!(msg.contains("stepz"), "{msg}");
        assert_eq!(line, 3);
    }

    #[test]
    fn unknown_step_kind_names_the_variant() {
        let (msg, line, _) =
            syntax_error("Pipeline(name: \"p\", steps: [\n  Step(id: \"a\", kind: Shel(commands: [\"x\"])),\n])");
        assert!(msg.contains("Shel"), "{msg}");
        assert_eq!(line, 2);
    }

    #[test]
    fn a_misspelt_field_or_kind_gets_the_closest_name_suggested() {
        let suggested = |text: &str| match parse(Path::new("p.ron"), text.to_string()) {
            Err(LoadError::Syntax { diagnostic, .. }) => diagnostic.label,
            other => panic!("expected a syntax error, got {other:?}"),
        };
        let shell = "Pipeline(name: \"p\", steps: [Step(id: \"a\", kind: Shell(comands: [\"x\"]))])";
        assert_eq!(suggested(shell).as_deref(), Some("did you mean `commands`?"));
        let kind = "Pipeline(name: \"p\", steps: [Step(id: \"a\", kind: Shel(commands: [\"x\"]))])";
        assert_eq!(suggested(kind).as_deref(), Some("did you mean `Shell`?"));
        let far = "Pipeline(name: \"p\", steps: [Step(id: \"a\", kind: Shell(zzzzzzzz: [\"x\"]))])";
        assert_eq!(suggested(far), None);
    }

    #[test]
    fn missing_field_is_reported() {
        let (msg, line, _) =
            syntax_error("Pipeline(name: \"p\", steps: [\n  Step(kind: Shell(commands: [\"x\"])),\n])");
        assert!(msg.contains("id"), "{msg}");
        assert_eq!(line, 2);
    }

    #[test]
    fn bad_syntax_is_reported_with_line_and_column() {
        let (_, line, _) = syntax_error("Pipeline(name: \"p\",\n  steps: [\n    Step(id: \"a\" kind: Shell()),\n])");
        assert_eq!(line, 3);
    }

    #[test]
    fn a_file_that_is_not_utf8_is_reported_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ron");
        std::fs::write(&path, b"Pipeline(\n  name: \"p\xe9\",\n)").unwrap();
        let Err(e @ LoadError::Syntax { .. }) = load(&path) else { panic!("expected a syntax error") };
        let out = e.render();
        assert!(out.contains("not valid UTF-8 (byte 0xe9)"), "{out}");
        assert!(out.contains("p.ron:2:11"), "{out}");
    }

    #[test]
    fn optional_fields_take_bare_values() {
        let text = "Pipeline(name: \"p\", steps: [Step(id: \"a\", kind: Shell(commands: [\"x\"]), timeout: \"5s\")])";
        let loaded = parse(Path::new("p.ron"), text.into()).unwrap();
        assert_eq!(loaded.pipeline.steps[0].timeout.as_deref(), Some("5s"));
    }
}
