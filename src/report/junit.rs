//! `--junit FILE`: the run as a JUnit XML report (one test case per node), for CodeBuild reports and other CI
//! consoles. Consumes the same event stream as the other reporters; the file is written once, atomically, when the
//! run ends.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use engine::event::{Event, EventKind, Status};

/// At most this many bytes of a node's log go into its `<system-out>` (the end of the log is kept).
const MAX_LOG_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Case {
    node: String,
    status: Option<Status>,
    duration: Duration,
    error: Option<String>,
    log: String,
}

/// Gathers what the report needs while the run goes on.
#[derive(Debug)]
pub struct JunitReporter {
    path: PathBuf,
    pipeline: String,
    run_id: String,
    started: Option<SystemTime>,
    wall: Duration,
    cases: Vec<Case>,
    index: HashMap<String, usize>,
}

impl JunitReporter {
    pub fn new(path: &Path) -> Self {
        JunitReporter {
            path: path.to_path_buf(),
            pipeline: String::new(),
            run_id: String::new(),
            started: None,
            wall: Duration::ZERO,
            cases: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn record(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { run_id, pipeline, nodes, .. } => {
                self.run_id = run_id.clone();
                self.pipeline = pipeline.clone();
                self.started = Some(event.time);
                nodes.iter().for_each(|n| self.add(&n.id));
            }
            EventKind::NodesAdded { nodes, .. } => nodes.iter().for_each(|n| self.add(&n.id)),
            EventKind::Log { node, line, .. } => {
                if let Some(&i) = self.index.get(node) {
                    let log = &mut self.cases[i].log;
                    log.push_str(line);
                    log.push('\n');
                    if log.len() > 2 * MAX_LOG_BYTES {
                        keep_tail(log, MAX_LOG_BYTES);
                    }
                }
            }
            EventKind::NodeRetrying { node, attempt, reason, .. } => {
                if let Some(&i) = self.index.get(node) {
                    let _ = writeln!(self.cases[i].log, "--- attempt {} failed: {reason}; retrying", attempt - 1);
                }
            }
            EventKind::NodeFinished { node, status, duration_ms, error, .. } => {
                if let Some(&i) = self.index.get(node) {
                    let case = &mut self.cases[i];
                    case.status = Some(*status);
                    case.duration = *duration_ms;
                    case.error = error.clone();
                }
            }
            EventKind::RunFinished { duration_ms, .. } => self.wall = *duration_ms,
            _ => {}
        }
    }

    fn add(&mut self, id: &str) {
        if !self.index.contains_key(id) {
            self.index.insert(id.to_string(), self.cases.len());
            self.cases.push(Case { node: id.to_string(), ..Default::default() });
        }
    }

    /// A report of a run that stopped before any step ran (e.g. a failed preflight): one failed test case.
    pub fn not_run(&mut self, pipeline: &str, run_id: &str, case: &str, error: &str) {
        self.pipeline = pipeline.to_string();
        self.run_id = run_id.to_string();
        self.started = Some(SystemTime::now());
        self.add(case);
        if let Some(&i) = self.index.get(case) {
            self.cases[i].status = Some(Status::Failed);
            self.cases[i].error = Some(error.to_string());
        }
    }

    /// The report as XML.
    pub fn render(&self) -> String {
        let count = |f: fn(Option<Status>) -> bool| self.cases.iter().filter(|c| f(c.status)).count();
        let failures = count(|s| s == Some(Status::Failed));
        let skipped = count(|s| matches!(s, Some(Status::Skipped | Status::Cancelled) | None));
        let timestamp = self
            .started
            .map(|t| humantime::format_rfc3339_seconds(t).to_string().trim_end_matches('Z').to_string())
            .unwrap_or_default();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"runner\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" \
             time=\"{}\">",
            self.cases.len(),
            seconds(self.wall)
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" id=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" \
             skipped=\"{skipped}\" time=\"{}\" timestamp=\"{timestamp}\">",
            escape(&self.pipeline),
            escape(&self.run_id),
            self.cases.len(),
            seconds(self.wall)
        );
        for case in &self.cases {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\">",
                escape(&case.node),
                escape(&self.pipeline),
                seconds(case.duration)
            );
            let error = case.error.as_deref().unwrap_or("");
            let mut inner = String::new();
            match case.status {
                Some(Status::Failed) => {
                    let _ = write!(
                        inner,
                        "\n      <failure message=\"{}\" type=\"failed\">{}</failure>",
                        escape(error.lines().next().unwrap_or("failed")),
                        escape(error)
                    );
                }
                Some(status @ (Status::Skipped | Status::Cancelled)) => {
                    let message =
                        if error.is_empty() { status.as_str().to_string() } else { format!("{status}: {error}") };
                    let _ = write!(inner, "\n      <skipped message=\"{}\"/>", escape(&message));
                }
                None => inner.push_str("\n      <skipped message=\"not run\"/>"),
                Some(Status::Succeeded | Status::Unchanged | Status::UpToDate) => {}
            }
            let mut log = case.log.clone();
            if let Some(status @ (Status::Unchanged | Status::UpToDate)) = case.status {
                let _ = writeln!(log, "{status}");
            }
            if !log.is_empty() {
                keep_tail(&mut log, MAX_LOG_BYTES);
                let _ = write!(inner, "\n      <system-out>{}</system-out>", escape(&log));
            }
            if !inner.is_empty() {
                out.push_str(&inner);
                out.push_str("\n    ");
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }

    /// Writes the report (temp file, fsync, rename), creating the parent directory.
    pub fn write(&self) -> Result<(), String> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot write the JUnit report: cannot create {}: {e}", parent.display()))?;
        }
        engine::record::write_atomic(&self.path, self.render().as_bytes())
            .map_err(|e| format!("cannot write the JUnit report {}: {e}", self.path.display()))
    }
}

/// `1.234`: seconds with millisecond precision.
fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Drops the start of `text` so that at most `max` bytes remain, cutting at a line start.
fn keep_tail(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    if let Some(nl) = text[cut..].find('\n') {
        cut += nl + 1;
    }
    text.replace_range(..cut, "[earlier lines left out]\n");
}

/// Text as XML character data or attribute value: markup escaped, characters XML 1.0 forbids (terminal escapes,
/// other control characters) left out.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

impl super::Reporter for JunitReporter {
    fn event(&mut self, event: &Event) {
        self.record(event);
    }

    fn finish(&mut self, _summary: &super::Summary) {
        if let Err(e) = self.write() {
            eprintln!("error: {e}");
        }
    }

    /// One failed `preflight` case.
    fn not_started(&mut self, summary: &super::Summary, errors: &[String]) {
        self.not_run(&summary.pipeline, &summary.run_id, "preflight", &errors.join("\n"));
        if let Err(e) = self.write() {
            eprintln!("error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_markup_out_and_drops_control_characters() {
        assert_eq!(escape("a < b & \"c\" \u{1b}[31mred"), "a &lt; b &amp; &quot;c&quot; [31mred");
    }

    #[test]
    fn long_logs_keep_their_end_from_a_line_start() {
        let mut log = "first line\nsecond line\nthird line\n".to_string();
        keep_tail(&mut log, 15);
        assert_eq!(log, "[earlier lines left out]\nthird line\n");
    }

    #[test]
    fn durations_are_seconds_with_milliseconds() {
        assert_eq!(seconds(Duration::from_millis(61_005)), "61.005");
    }
}
