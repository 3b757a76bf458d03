//! Views of a plan for people: the waves of a dry run, and the DAG as text, Graphviz DOT and Mermaid.

mod dot;
mod mermaid;

pub use dot::dot;
pub use mermaid::mermaid;

use std::fmt::Write;

use petgraph::Direction;

use crate::plan::Plan;

/// The widest a column of names is padded to, in characters: a longer name pushes the rest of its line right
/// instead of widening every line (and formatting stays within its bounds for any name).
pub const MAX_COLUMN: usize = 64;

/// The dry run: waves of nodes that run together, and what each does.
pub fn waves(plan: &Plan, jobs: usize) -> String {
    let waves = plan.waves();
    let mut out = String::new();
    let at_once = if jobs == 0 { "no limit".to_string() } else { format!("at most {jobs} at once") };
    let _ = writeln!(
        out,
        "pipeline `{}`: {} steps, {} nodes, {} waves ({at_once})",
        plan.pipeline.loaded.pipeline.name,
        plan.pipeline.loaded.pipeline.steps.len(),
        plan.graph.node_count(),
        waves.len()
    );
    // Columns are as wide as the longest id up to a bound (a longer one pushes its line's next column right).
    let width = plan.graph.node_weights().map(|n| n.id.chars().count()).max().unwrap_or(0).min(MAX_COLUMN);
    let kind_width = plan.graph.node_weights().map(|n| n.kind.len()).max().unwrap_or(0);
    for (k, wave) in waves.iter().enumerate() {
        let _ = writeln!(out, "\nwave {} ({} node{})", k + 1, wave.len(), if wave.len() == 1 { "" } else { "s" });
        for &n in wave {
            let node = &plan.graph[n];
            let later = if node.expands_at_run_time { " (expands at run time)" } else { "" };
            let _ = writeln!(out, "  {:width$}  {:kind_width$}  {}{later}", node.id, node.kind, node.description);
            let needs = plan.needs_of(n);
            if !needs.is_empty() {
                let _ = writeln!(out, "  {:width$}  {:kind_width$}  after: {}", "", "", needs.join(", "));
            }
        }
    }
    out
}

/// The DAG as text: each node, its kind, what it needs and what needs it, in wave order.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", plan.pipeline.loaded.pipeline.name);
    let order: Vec<_> = plan.waves().into_iter().flatten().collect();
    for (k, &n) in order.iter().enumerate() {
        let node = &plan.graph[n];
        let last = k + 1 == order.len();
        let (branch, stem) = if last { ("└──", "    ") } else { ("├──", "│   ") };
        let later = if node.expands_at_run_time { ", expands at run time" } else { "" };
        let _ = writeln!(out, "{branch} {} [{}{later}]", node.id, node.kind);
        let mut dependents: Vec<_> = plan.graph.neighbors_directed(n, Direction::Outgoing).collect();
        dependents.sort();
        let needs = plan.needs_of(n);
        if !needs.is_empty() {
            let _ = writeln!(out, "{stem}├── needs: {}", needs.join(", "));
        }
        let names: Vec<&str> = dependents.iter().map(|&d| &*plan.graph[d].id).collect();
        let needed_by = if names.is_empty() { "nothing".to_string() } else { names.join(", ") };
        let _ = writeln!(out, "{stem}└── needed by: {needed_by}");
    }
    out
}

/// Fill colour per step kind, shared by DOT and Mermaid.
fn colour(kind: &str) -> &'static str {
    match kind {
        "Source" => "#d6eaf8",
        "Shell" => "#e8f6f3",
        "Deploy" => "#fdebd0",
        "Publish" => "#f4ecf7",
        "Approval" => "#fadbd8",
        _ => "#f2f3f4",
    }
}
