//! Reporters: each consumes the event stream and never drives the run. Display (terminal bars or plain lines)
//! and JSON lines; all end with the same summary table. A JUnit XML file (`--junit`) is one more consumer.

mod json;
mod junit;
mod plain;
mod tty;

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use engine::event::{Event, EventKind, RunStatus, Status, Stream};

pub use json::JsonReporter;
pub use junit::JunitReporter;
pub use plain::PlainReporter;
pub use tty::TtyReporter;

/// Something that shows a run to people or machines. `Send`: a server runs many runs on its runtime's threads.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
    /// Called once after the last event.
    fn finish(&mut self, summary: &Summary);
    /// A line for people outside the event stream, before or beside the walk: resuming, preflight, waiting for
    /// another run. Nothing by default.
    fn notice(&mut self, _text: &str) {}
    /// The run is recorded as `run_id` in `run_dir` (a new run, or the one resumed), before the preflight and the
    /// walk: a server links to it and remembers which commit it runs. Nothing by default.
    fn recorded(&mut self, _run_id: &str, _run_dir: &std::path::Path) {}
    /// The run stopped before any step ran: the preflight's errors. Called instead of `finish`. Nothing by default.
    fn not_started(&mut self, _summary: &Summary, _errors: &[String]) {}
}

/// What a reporter for people prints when a run stops at its preflight (stderr): the errors, then what to do.
pub fn print_not_started(summary: &Summary, errors: &[String]) {
    for e in errors {
        eprintln!("error: preflight: {e}");
    }
    match &summary.remedy {
        Some(remedy) => eprintln!("{remedy}"),
        None => {
            eprintln!("nothing ran: a Deploy or Publish cannot act in its account (fix the access above and run again)")
        }
    }
}

/// What the summary table shows, gathered from events.
#[derive(Debug, Default)]
pub struct Summary {
    pub run_id: String,
    pub pipeline: String,
    pub rows: Vec<Row>,
    index: HashMap<String, usize>,
    pub status: Option<RunStatus>,
    pub wall: Duration,
    pub critical_path: Vec<String>,
    pub critical_path_duration: Duration,
    pub run_dir: String,
    /// Why the run restarted from a new definition.
    pub restarted: Option<String>,
    /// Why the run stopped before any step ran (a failed preflight).
    pub not_started: Option<String>,
    /// What to do about a failed preflight, when there is more to say than the generic line.
    pub remedy: Option<String>,
    /// The last lines each running node printed.
    last_lines: HashMap<String, LastLines>,
}

/// A running node's last non-blank line on each stream.
#[derive(Debug, Default)]
struct LastLines {
    stdout: Option<String>,
    stderr: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub node: String,
    pub status: Option<Status>,
    pub duration: Duration,
    pub error: Option<String>,
    /// What a succeeded node had to say, when short: its last line of output, else its outputs (`KEY=VALUE`).
    pub result: Option<String>,
}

/// A node's last line or outputs go in the summary up to this many characters (longer ones stay in its log).
const RESULT_WIDTH: usize = 100;

impl Summary {
    pub fn new(run_dir: String) -> Self {
        Summary { run_dir, ..Default::default() }
    }

    pub fn event(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { run_id, pipeline, nodes, .. } => {
                // A restart announces the nodes again.
                self.rows.clear();
                self.index.clear();
                self.run_id = run_id.clone();
                self.pipeline = pipeline.clone();
                for n in nodes {
                    self.add(&n.id);
                }
            }
            EventKind::NodesAdded { node, nodes } => self.add_parts(node, nodes.iter().map(|n| &*n.id)),
            EventKind::Log { node, stream: stream @ (Stream::Stdout | Stream::Stderr), line }
                if !line.trim().is_empty() =>
            {
                let last = self.last_lines.entry(node.clone()).or_default();
                if *stream == Stream::Stdout {
                    last.stdout = Some(line.clone());
                } else {
                    last.stderr = Some(line.clone());
                }
            }
            EventKind::NodeFinished { node, status, duration_ms, error, outputs, .. } => {
                // A tool's result is on stdout; its stderr holds notices and hints (npm's `npm notice`, cdk's
                // feature-flag count) that would read as the step's result.
                let last = self.last_lines.remove(node).and_then(|l| l.stdout.or(l.stderr));
                if let Some(&i) = self.index.get(node) {
                    let row = &mut self.rows[i];
                    row.status = Some(*status);
                    row.duration = *duration_ms;
                    row.error = error.clone();
                    row.result = (*status == Status::Succeeded).then(|| result(last, outputs)).flatten();
                }
            }
            EventKind::RunRestarting { reason, .. } => self.restarted = Some(reason.clone()),
            EventKind::RunFinished { status, duration_ms, critical_path, critical_path_ms } => {
                self.status = Some(*status);
                self.wall = *duration_ms;
                self.critical_path = critical_path.clone();
                self.critical_path_duration = *critical_path_ms;
            }
            _ => {}
        }
    }

    /// The run stopped before its first step: nothing ran, for `reason`.
    pub fn not_started(&mut self, run_id: &str, pipeline: &str, reason: &str) {
        self.run_id = run_id.to_string();
        self.pipeline = pipeline.to_string();
        self.status = Some(RunStatus::Failed);
        self.not_started = Some(reason.to_string());
    }

    fn add(&mut self, id: &str) {
        self.index.insert(id.to_string(), self.rows.len());
        self.rows.push(Row { node: id.to_string(), status: None, duration: Duration::ZERO, error: None, result: None });
    }

    /// The parts a node expanded into, right after it (and parts it had already), as `status` lists them in plan
    /// order: not at the end of the table after every step that comes later.
    fn add_parts<'a>(&mut self, parent: &str, ids: impl Iterator<Item = &'a str>) {
        let prefix = format!("{parent}/");
        let at = match self.rows.iter().rposition(|r| r.node == parent || r.node.starts_with(&prefix)) {
            Some(i) => i + 1,
            None => self.rows.len(),
        };
        let new: Vec<Row> = ids
            .map(|id| Row { node: id.to_string(), status: None, duration: Duration::ZERO, error: None, result: None })
            .collect();
        self.rows.splice(at..at, new);
        for (i, r) in self.rows.iter().enumerate().skip(at) {
            self.index.insert(r.node.clone(), i);
        }
    }

    /// The table, the critical path and the counts.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width =
            self.rows.iter().map(|r| r.node.chars().count()).max().unwrap_or(4).clamp(4, engine::graph::MAX_COLUMN);
        let _ = writeln!(out, "\n{:width$}  {:10}  {:>9}", "step", "status", "duration");
        for r in &self.rows {
            let status = r.status.map_or("not run", Status::as_str);
            let duration = match r.status {
                Some(Status::Skipped) | None => "-".to_string(),
                _ => format_duration(r.duration),
            };
            let note = match (&r.error, r.status, &r.result) {
                (Some(e), Some(Status::Failed), _) => format!("  {}", first_line(e)),
                (_, _, Some(result)) => format!("  {result}"),
                _ => String::new(),
            };
            let _ = writeln!(out, "{:width$}  {status:10}  {duration:>9}{note}", r.node);
        }
        if !self.critical_path.is_empty() {
            let _ = writeln!(
                out,
                "\ncritical path: {} ({} of {} wall)",
                spell_path(&self.critical_path),
                format_duration(self.critical_path_duration),
                format_duration(self.wall)
            );
        }
        let mut counts: Vec<(Status, usize)> = Vec::new();
        for r in &self.rows {
            if let Some(s) = r.status {
                match counts.iter_mut().find(|(k, _)| *k == s) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((s, 1)),
                }
            }
        }
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let verdict = match self.status {
            Some(RunStatus::Succeeded) => "succeeded",
            Some(RunStatus::Failed) => "failed",
            Some(RunStatus::Interrupted) => "interrupted",
            None => "ended",
        };
        if let Some(reason) = &self.restarted {
            let _ = writeln!(out, "restarted once: the pipeline definition changed in the source ({reason})");
        }
        let _ = writeln!(out, "run {} {verdict}: {}; logs in {}", self.run_id, counts.join(", "), self.run_dir);
        out
    }
}

/// What the summary shows of a succeeded node: its last line of output when short, else its outputs when short.
fn result(last_line: Option<String>, outputs: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let short = |s: &str| s.chars().count() <= RESULT_WIDTH;
    if let Some(line) = last_line.map(|l| l.trim().to_string()).filter(|l| short(l)) {
        return Some(line);
    }
    let outputs: Vec<String> = outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let outputs = outputs.join(" ");
    (!outputs.is_empty() && short(&outputs)).then_some(outputs)
}

/// A chain of nodes as `a -> b -> c`; a long one keeps its first and last five and says how many it leaves out
/// (a 2,000-step pipeline's path would fill the screen; the JSON `run_finished` event has all of it).
fn spell_path(path: &[String]) -> String {
    const ENDS: usize = 5;
    if path.len() <= 2 * ENDS + 2 {
        return path.join(" -> ");
    }
    format!(
        "{} -> ({} more) -> {}",
        path[..ENDS].join(" -> "),
        path.len() - 2 * ENDS,
        path[path.len() - ENDS..].join(" -> ")
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `850ms`, `12.3s`, `4m05s`.
/// Progress as people read it: `3/22 resources`; bytes in MiB (`12.0/600.0 MiB`).
pub fn amount(done: u64, total: Option<u64>, unit: &str) -> String {
    if unit == "bytes" {
        // KiB under a MiB: a template of a few KiB is not `0.0/0.0 MiB`.
        let (scale, name) =
            if total.unwrap_or(done) < 1024 * 1024 { (1024.0, "KiB") } else { (1024.0 * 1024.0, "MiB") };
        let show = |b: u64| format!("{:.1}", b as f64 / scale);
        return match total {
            Some(t) => format!("{}/{} {name}", show(done), show(t)),
            None => format!("{} {name}", show(done)),
        };
    }
    match total {
        Some(t) => format!("{done}/{t} {unit}"),
        None => format!("{done} {unit}"),
    }
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// One line describing a finished node.
pub fn finished_line(status: Status, duration: Duration, error: Option<&str>) -> String {
    match (status, error) {
        (Status::Skipped, Some(e)) | (Status::Cancelled, Some(e)) if duration.is_zero() => {
            format!("{status}: {e}")
        }
        (_, Some(e)) => format!("{status} after {}: {e}", format_duration(duration)),
        (_, None) => format!("{status} in {}", format_duration(duration)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    #[test]
    fn parts_are_listed_right_after_the_node_that_expanded_into_them() {
        let mut summary = Summary::default();
        for id in ["source", "deploy", "smoke-test"] {
            summary.add(id);
        }
        summary.add_parts("deploy", ["deploy/Vpc", "deploy/S3"].into_iter());
        summary.add_parts("deploy", ["deploy/Dynamo"].into_iter());
        let order: Vec<&str> = summary.rows.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(order, ["source", "deploy", "deploy/Vpc", "deploy/S3", "deploy/Dynamo", "smoke-test"]);
        assert_eq!(summary.index["smoke-test"], 5);
        assert_eq!(summary.index["deploy/S3"], 3);
    }

    #[test]
    fn bytes_read_in_kib_under_a_mib_and_in_mib_above() {
        assert_eq!(amount(2048, Some(6144), "bytes"), "2.0/6.0 KiB");
        assert_eq!(amount(0, Some(600 * 1024 * 1024), "bytes"), "0.0/600.0 MiB");
        assert_eq!(amount(3, Some(10), "assets"), "3/10 assets");
    }

    #[test]
    fn a_short_critical_path_is_spelled_whole() {
        assert_eq!(spell_path(&path(3)), "s0 -> s1 -> s2");
        assert_eq!(spell_path(&path(12)).matches(" -> ").count(), 11);
    }

    #[test]
    fn a_long_critical_path_keeps_its_ends_and_counts_the_rest() {
        assert_eq!(
            spell_path(&path(200)),
            "s0 -> s1 -> s2 -> s3 -> s4 -> (190 more) -> s195 -> s196 -> s197 -> s198 -> s199"
        );
    }
}
