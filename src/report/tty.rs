//! The terminal: an overall bar and one spinner per running node showing its last log line; finished nodes
//! scroll above; a failed node's last lines are shown in full.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use engine::approval::{Answer, ApprovalDesk};
use engine::event::{Event, EventKind, NodeInfo, Status};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{finished_line, print_not_started, Reporter, Summary};

const TAIL: usize = 15;

pub struct TtyReporter {
    approvals: ApprovalDesk,
    /// The nodes as announced, to show what an approval lets through.
    nodes: Vec<NodeInfo>,
    multi: MultiProgress,
    overall: ProgressBar,
    bars: HashMap<String, ProgressBar>,
    tails: HashMap<String, VecDeque<String>>,
    style: ProgressStyle,
}

impl TtyReporter {
    pub fn new(approvals: ApprovalDesk) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        // The run's clock in the same form as each step's (`42s`, `3m`), ticking on its own: redrawn only when a
        // node finished, it stood at zero while the steps' clocks ran.
        overall.set_style(
            ProgressStyle::with_template("{elapsed:>4.dim} [{bar:30.cyan/blue}] {pos}/{len} nodes {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let style = ProgressStyle::with_template("  {spinner:.green} {prefix:.bold} {elapsed:>4.dim} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        TtyReporter { approvals, nodes: Vec::new(), multi, overall, bars: HashMap::new(), tails: HashMap::new(), style }
    }

    fn println(&self, line: String) {
        let _ = self.multi.println(line);
    }

    /// Take every bar off the screen (an interrupted run's included: nodes cancelled before they finished leave
    /// theirs), so that nothing of the last frame stays above the summary.
    fn clear(&mut self) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl TtyReporter {
    /// Show what the approval lets through, then ask at the terminal (on a thread: the run goes on meanwhile).
    fn ask(&self, node: &str, message: &str) {
        let mut downstream: Vec<&NodeInfo> = Vec::new();
        let mut frontier: Vec<&str> = vec![node];
        while let Some(id) = frontier.pop() {
            for n in self.nodes.iter().filter(|n| n.needs.iter().any(|m| &**m == id)) {
                if !downstream.iter().any(|d| d.id == n.id) {
                    downstream.push(n);
                    frontier.push(&n.id);
                }
            }
        }
        let mut text = format!("\n? {node}: {message}\n  approving lets these run:\n");
        for n in &downstream {
            text.push_str(&format!("    {}  {}\n", n.id, n.description));
        }
        text.push_str("  approve? type y and Enter (anything else rejects)");
        self.println(text);
        let desk = self.approvals.clone();
        let node = node.to_string();
        // Not holding the bars while waiting: `runner approve` from another shell may answer first.
        std::thread::spawn(move || {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_ok() {
                let approved = matches!(line.trim().to_lowercase().as_str(), "y" | "yes");
                desk.answer(&node, Answer { approved, by: "the terminal".into() });
            }
        });
    }
}

impl Reporter for TtyReporter {
    fn event(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { run_id, pipeline, nodes, .. } => {
                self.nodes = nodes.clone();
                self.overall.set_length(nodes.len() as u64);
                // Ticking from here, not from the reporter's start: before the run knows its nodes (the preflight)
                // the bar would be drawn full at 0/0.
                self.overall.enable_steady_tick(Duration::from_millis(500));
                self.println(format!("run {run_id}: pipeline `{pipeline}`, {}", engine::counted(nodes.len(), "node")));
            }
            EventKind::NodesAdded { nodes, .. } => {
                self.nodes.extend(nodes.iter().cloned());
                self.overall.inc_length(nodes.len() as u64)
            }
            EventKind::NodeStarted { node, .. } if self.bars.contains_key(node) => {}
            EventKind::NodeStarted { node, .. } => {
                let bar = self.multi.insert_before(&self.overall, ProgressBar::new_spinner());
                bar.set_style(self.style.clone());
                bar.set_prefix(node.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(node.clone(), bar);
            }
            EventKind::Log { node, line, .. } => {
                if let Some(bar) = self.bars.get(node) {
                    bar.set_message(line.clone());
                }
                let tail = self.tails.entry(node.clone()).or_default();
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
            }
            EventKind::Progress { node, done, total, unit, message } => {
                if let Some(bar) = self.bars.get(node) {
                    bar.set_message(format!("{message} {}", super::amount(*done, *total, unit)));
                }
            }
            EventKind::NodeRetrying { node, attempt, reason, .. } => {
                self.println(format!("  ↻ {node}: attempt {} failed: {reason}; retrying", attempt - 1));
                // A failure shows the last attempt's lines, not every attempt's one after the other.
                self.tails.remove(node);
            }
            EventKind::ApprovalRequested { node, message } => self.ask(node, message),
            EventKind::NodeFinished { node, status, duration_ms, error, .. } => {
                if let Some(bar) = self.bars.remove(node) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.overall.inc(1);
                let mark = match status {
                    s if s.is_success() => "✔",
                    Status::Failed => "✘",
                    _ => "-",
                };
                self.println(format!("  {mark} {node} {}", finished_line(*status, *duration_ms, error.as_deref())));
                let tail = self.tails.remove(node);
                if *status == Status::Failed {
                    for line in tail.into_iter().flatten() {
                        self.println(format!("      | {line}"));
                    }
                }
            }
            EventKind::RunRestarting { node, reason } => {
                self.println(format!("  ↻ {node}: the pipeline definition changed ({reason}): restarting the run"));
            }
            EventKind::RunFinished { .. } => {
                self.overall.finish_and_clear();
            }
        }
    }

    fn finish(&mut self, summary: &Summary) {
        self.clear();
        print!("{}", summary.render());
    }

    fn notice(&mut self, text: &str) {
        self.multi.suspend(|| eprintln!("{text}"));
    }

    fn not_started(&mut self, summary: &Summary, errors: &[String]) {
        self.clear();
        print_not_started(summary, errors);
    }
}
