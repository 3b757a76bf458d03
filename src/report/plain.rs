//! Plain lines, one per event, timestamped and prefixed by the node id: for CI logs and CodeBuild. Progress is
//! throttled: a node's progress line at most every [`PROGRESS_EVERY`], and never the same one twice.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use engine::event::{Event, EventKind, Stream};

use super::{finished_line, print_not_started, Reporter, Summary};

/// A node's progress is printed at most this often: a clone reports every few kilobytes and a deploy every
/// event, which would be thousands of lines in a CI log.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct PlainReporter<W: Write> {
    out: W,
    /// Per running node: the last progress line printed and when (the event's time), and the latest one held back.
    progress: HashMap<String, Progress>,
}

struct Progress {
    printed_at: SystemTime,
    printed: String,
    held: Option<String>,
    /// The held line says the work is done (`281/281 objects`).
    held_complete: bool,
}

impl<W: Write> PlainReporter<W> {
    pub fn new(out: W) -> Self {
        PlainReporter { out, progress: HashMap::new() }
    }

    /// The node's progress line held back, if any (only one saying the work is done, with `complete_only`),
    /// printed now; it counts as the last one printed.
    fn print_held(&mut self, node: &str, time: &str, complete_only: bool) {
        if let Some(p) = self.progress.get_mut(node) {
            if complete_only && !p.held_complete {
                return;
            }
            if let Some(held) = p.held.take() {
                let _ = writeln!(self.out, "{time} [{node}] {held}");
                p.printed = held;
            }
        }
    }

    /// Whether a progress line is worth printing: the node's first, or one that says something new at least
    /// [`PROGRESS_EVERY`] after the last one printed. Never the same line twice in a row.
    fn progress_due(&mut self, node: &str, time: SystemTime, text: &str, complete: bool) -> bool {
        match self.progress.get_mut(node) {
            Some(p) if p.printed == text => {
                p.held = None;
                false
            }
            Some(p) if time.duration_since(p.printed_at).unwrap_or_default() < PROGRESS_EVERY => {
                p.held = Some(text.to_string());
                p.held_complete = complete;
                false
            }
            _ => {
                let p = Progress { printed_at: time, printed: text.to_string(), held: None, held_complete: false };
                self.progress.insert(node.to_string(), p);
                true
            }
        }
    }
}

fn clock(event: &Event) -> String {
    let t = humantime::format_rfc3339_millis(event.time).to_string();
    // 2026-11-25T16:22:44.123Z -> 16:22:44.123
    t.get(11..23).unwrap_or(&t).to_string()
}

impl<W: Write + Send> Reporter for PlainReporter<W> {
    fn event(&mut self, event: &Event) {
        let time = clock(event);
        let line = match &event.kind {
            EventKind::RunStarted { run_id, pipeline, nodes, jobs } => {
                let jobs = if *jobs == 0 { "no limit".to_string() } else { jobs.to_string() };
                format!(
                    "{time} run {run_id}: pipeline `{pipeline}`, {}, jobs {jobs}",
                    engine::counted(nodes.len(), "node")
                )
            }
            EventKind::NodeStarted { node, attempt } if *attempt > 1 => {
                format!("{time} [{node}] started, attempt {attempt}")
            }
            EventKind::NodeStarted { node, .. } => format!("{time} [{node}] started"),
            EventKind::Log { node, stream, line } => {
                // Progress that ended comes before what the node says next (`receiving 281/281 objects`, then
                // `checked out ...`), not after it; progress still going stays held (a line per item written
                // would double the log).
                self.print_held(node, &time, true);
                let mark = if *stream == Stream::Stderr { "! " } else { "" };
                format!("{time} [{node}] {mark}{line}")
            }
            EventKind::Progress { node, done, total, unit, message } => {
                let text = format!("{message} {}", super::amount(*done, *total, unit));
                if !self.progress_due(node, event.time, &text, total.is_some_and(|t| *done >= t)) {
                    return;
                }
                format!("{time} [{node}] {text}")
            }
            EventKind::NodeRetrying { node, attempt, delay_ms, reason } => {
                format!("{time} [{node}] attempt {} failed: {reason}; attempt {attempt} in {delay_ms}ms", attempt - 1)
            }
            EventKind::NodesAdded { node, nodes } => {
                let ids: Vec<&str> = nodes.iter().map(|n| &*n.id).collect();
                format!("{time} [{node}] expanded into {}", ids.join(", "))
            }
            EventKind::ApprovalRequested { node, message } => {
                format!("{time} [{node}] waiting for approval: {message}")
            }
            EventKind::NodeFinished { node, status, duration_ms, error, .. } => {
                // Where the node's progress ended, if that was held back: the last word on it.
                self.print_held(node, &time, false);
                self.progress.remove(node);
                format!("{time} [{node}] {}", finished_line(*status, *duration_ms, error.as_deref()))
            }
            EventKind::RunRestarting { node, reason } => {
                format!("{time} [{node}] the pipeline definition changed ({reason}): restarting the run from it")
            }
            EventKind::RunFinished { .. } => return,
        };
        let _ = writeln!(self.out, "{line}");
    }

    fn finish(&mut self, summary: &Summary) {
        let _ = write!(self.out, "{}", summary.render());
        let _ = self.out.flush();
    }

    fn notice(&mut self, text: &str) {
        let _ = self.out.flush();
        eprintln!("{text}");
    }

    fn not_started(&mut self, summary: &Summary, errors: &[String]) {
        let _ = self.out.flush();
        print_not_started(summary, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(at_ms: u64, done: u64) -> Event {
        Event {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
            kind: EventKind::Progress {
                node: "source".into(),
                done,
                total: Some(100),
                unit: "objects".into(),
                message: "receiving".into(),
            },
        }
    }

    #[test]
    fn progress_lines_are_printed_at_most_every_few_seconds_and_never_twice() {
        let mut out = Vec::new();
        {
            let mut r = PlainReporter::new(&mut out);
            // 1,000 events in 12 s: the first, then one at 5 s and one at 10 s.
            for k in 0..1000u64 {
                r.event(&progress(k * 12, k / 10));
            }
            // Later but the same line as the last one printed: not again.
            r.event(&progress(60_000, 50));
            r.event(&progress(60_000, 50));
            // Progress still going, then a line of the node's: the progress stays held (not a line per item).
            r.event(&progress(60_500, 60));
            r.event(&Event {
                time: SystemTime::UNIX_EPOCH + Duration::from_millis(60_600),
                kind: EventKind::Log { node: "source".into(), stream: Stream::Stdout, line: "wrote one".into() },
            });
            // Held back, then the node finishes: where it ended is printed before it.
            r.event(&progress(61_000, 100));
            // A line of the node's own comes after where its progress got to.
            r.event(&Event {
                time: SystemTime::UNIX_EPOCH + Duration::from_millis(61_200),
                kind: EventKind::Log { node: "source".into(), stream: Stream::Stdout, line: "checked out".into() },
            });
            r.event(&Event {
                time: SystemTime::UNIX_EPOCH + Duration::from_millis(61_500),
                kind: EventKind::NodeFinished {
                    node: "source".into(),
                    status: engine::event::Status::Succeeded,
                    duration_ms: Duration::from_secs(61),
                    outputs: Default::default(),
                    error: None,
                    workspace: None,
                },
            });
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert!(lines[0].ends_with("receiving 0/100 objects"), "{text}");
        assert!(lines[3].ends_with("receiving 50/100 objects"), "{text}");
        assert!(lines[4].ends_with("[source] wrote one"), "{text}");
        assert!(lines[5].ends_with("receiving 100/100 objects"), "{text}");
        assert!(lines[6].ends_with("[source] checked out"), "{text}");
        assert!(lines[7].contains("[source] succeeded"), "{text}");
    }
}
