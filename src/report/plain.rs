//! Plain lines, one per event, timestamped and prefixed by the node id: for CI logs and CodeBuild.

use std::io::Write;

use engine::event::{Event, EventKind, Stream};

use super::{finished_line, print_not_started, Reporter, Summary};

pub struct PlainReporter<W: Write> {
    out: W,
}

impl<W: Write> PlainReporter<W> {
    pub fn new(out: W) -> Self {
        PlainReporter { out }
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
                format!("{time} run {run_id}: pipeline `{pipeline}`, {} nodes, jobs {jobs}", nodes.len())
            }
            EventKind::NodeStarted { node, attempt } if *attempt > 1 => {
                format!("{time} [{node}] started, attempt {attempt}")
            }
            EventKind::NodeStarted { node, .. } => format!("{time} [{node}] started"),
            EventKind::Log { node, stream: Stream::Stderr, line } => format!("{time} [{node}] ! {line}"),
            EventKind::Log { node, line, .. } => format!("{time} [{node}] {line}"),
            EventKind::Progress { node, done, total, unit, message } => match total {
                Some(t) => format!("{time} [{node}] {message} {}", super::amount(*done, Some(*t), unit)),
                None => format!("{time} [{node}] {message} {}", super::amount(*done, None, unit)),
            },
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
