//! Views of a plan for people: the waves of a dry run, and the DAG as text, Graphviz DOT and Mermaid.

mod dot;
mod mermaid;

pub use dot::dot;
pub use mermaid::mermaid;

use std::fmt::Write;

use petgraph::algo::tred;
use petgraph::graph::NodeIndex;

use crate::model::{PublishAssets, StepKind};
use crate::plan::Plan;

/// The widest a column of names is padded to, in characters: a longer name pushes the rest of its line right
/// instead of widening every line (and formatting stays within its bounds for any name).
pub const MAX_COLUMN: usize = 64;

/// A node's description in the plan is cut to this many characters (a Shell step's commands can run to hundreds);
/// [`waves_in_full`] keeps them whole.
pub const DESCRIPTION_WIDTH: usize = 100;

/// How many nodes may run at once (0: no limit) and what set that number, which the plan's heading says so that a
/// reader knows which knob turns it (`--jobs`, the pipeline's `max_parallel`, or the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobsLimit {
    pub nodes: usize,
    /// Lower case, e.g. "--jobs".
    pub set_by: &'static str,
}

impl std::fmt::Display for JobsLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.nodes {
            0 => write!(f, "no limit on nodes running at once: {}", self.set_by),
            n => write!(f, "at most {} running at once: {}", crate::counted(n, "node"), self.set_by),
        }
    }
}

/// The dry run: waves of nodes that run together, and what each does, long descriptions shortened.
pub fn waves(plan: &Plan, jobs: JobsLimit) -> String {
    waves_with(plan, jobs, Some(DESCRIPTION_WIDTH))
}

/// The dry run with every description whole (`runner plan --full`).
pub fn waves_in_full(plan: &Plan, jobs: JobsLimit) -> String {
    waves_with(plan, jobs, None)
}

/// `text` cut to `width` characters, `…` standing for the rest.
fn shorten(text: &str, width: Option<usize>) -> std::borrow::Cow<'_, str> {
    match width {
        Some(w) if text.chars().count() > w => {
            let cut: String = text.chars().take(w.saturating_sub(1)).collect();
            format!("{}…", cut.trim_end()).into()
        }
        _ => text.into(),
    }
}

fn waves_with(plan: &Plan, jobs: JobsLimit, width: Option<usize>) -> String {
    let waves = plan.waves();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline `{}`: {}, {}, {} ({jobs})",
        plan.pipeline.loaded.pipeline.name,
        crate::counted(plan.pipeline.loaded.pipeline.steps.len(), "step"),
        crate::counted(plan.graph.node_count(), "node"),
        crate::counted(waves.len(), "wave")
    );
    out.push_str(&parameters(plan));
    // Columns are as wide as the longest id up to a bound (a longer one pushes its line's next column right).
    let id_width = plan.graph.node_weights().map(|n| n.id.chars().count()).max().unwrap_or(0).min(MAX_COLUMN);
    let mut shortened = false;
    let kind_width = plan.graph.node_weights().map(|n| n.kind.len()).max().unwrap_or(0);
    for (k, wave) in waves.iter().enumerate() {
        let _ = writeln!(out, "\nwave {} ({})", k + 1, crate::counted(wave.len(), "node"));
        for &n in wave {
            let node = &plan.graph[n];
            let later = if node.expands_at_run_time { " (expands at run time)" } else { "" };
            let description = shorten(&node.description, width);
            shortened |= description.len() != node.description.len();
            let _ = writeln!(out, "  {:id_width$}  {:kind_width$}  {description}{later}", node.id, node.kind);
            let needs = plan.needs_of(n);
            if !needs.is_empty() {
                let _ = writeln!(out, "  {:id_width$}  {:kind_width$}  after: {}", "", "", needs.join(", "));
            }
        }
    }
    if shortened {
        let _ = writeln!(out, "\n(long descriptions shortened: `runner plan FILE --full` shows them whole)");
    }
    out
}

/// The pipeline's parameters and the values the steps got (after the header of `plan`), if it has any.
pub fn parameters(plan: &Plan) -> String {
    let pipeline = &plan.pipeline.loaded.pipeline;
    if pipeline.parameters.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nparameters\n");
    let width = pipeline.parameters.keys().map(String::len).max().unwrap_or(0);
    for (name, parameter) in &pipeline.parameters {
        let value = pipeline.values.get(name).map_or("(no value)", String::as_str);
        let _ = write!(out, "  {name:width$}  = {value}");
        if let Some(d) = &parameter.description {
            let _ = write!(out, "  ({d})");
        }
        out.push('\n');
    }
    out
}

/// The DAG as a tree, like `cargo tree`: each node under the node it runs after, from the nodes that need nothing;
/// edges implied by others are left out (as in DOT and Mermaid), and a node reached again (it needs several) is
/// printed once in full and then marked `(*)`. Several roots are each a tree of their own.
pub fn text(plan: &Plan) -> String {
    let edges = reduced_edges(plan);
    let mut children: Vec<Vec<NodeIndex>> = vec![Vec::new(); plan.graph.node_count()];
    let mut has_parent = vec![false; plan.graph.node_count()];
    for &(from, to) in &edges {
        children[from.index()].push(to);
        has_parent[to.index()] = true;
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}", plan.pipeline.loaded.pipeline.name);
    let roots: Vec<NodeIndex> = plan.graph.node_indices().filter(|n| !has_parent[n.index()]).collect();
    let mut shown = vec![false; plan.graph.node_count()];
    let mut repeated = false;
    // Depth first, iteratively: a 10k-step chain is 10k levels deep. (node, prefix of its line, last child?)
    let mut stack: Vec<(NodeIndex, String, bool)> =
        roots.iter().rev().enumerate().map(|(k, &n)| (n, String::new(), k == 0)).collect();
    while let Some((n, prefix, last)) = stack.pop() {
        let node = &plan.graph[n];
        let branch = if last { "└── " } else { "├── " };
        let mut label = format!("{} [{}", node.id, node.kind);
        if let Some(env) = environment(plan, node.step) {
            let _ = write!(label, ", {env}");
        }
        if node.expands_at_run_time {
            label.push_str(", expands at run time");
        }
        label.push(']');
        if shown[n.index()] && !children[n.index()].is_empty() {
            repeated = true;
            let _ = writeln!(out, "{prefix}{branch}{label} (*)");
            continue;
        }
        shown[n.index()] = true;
        let _ = writeln!(out, "{prefix}{branch}{label}");
        let inner = format!("{prefix}{}", if last { "    " } else { "│   " });
        let kids = &children[n.index()];
        for (k, &c) in kids.iter().enumerate().rev() {
            stack.push((c, inner.clone(), k + 1 == kids.len()));
        }
    }
    if repeated {
        out.push_str("(*) shown above, with what runs after it\n");
    }
    out
}

/// The plan's edges without those implied by others (its transitive reduction, as Graphviz's `tred` computes):
/// `synth -> stack` is left out when `synth -> vpc -> stack` says it already. Sorted by source, then target, in
/// plan order.
pub fn reduced_edges(plan: &Plan) -> Vec<(NodeIndex, NodeIndex)> {
    let Ok(order) = petgraph::algo::toposort(&plan.graph, None) else {
        return plan.graph.raw_edges().iter().map(|e| (e.source(), e.target())).collect();
    };
    let (list, _) = tred::dag_to_toposorted_adjacency_list::<_, u32>(&plan.graph, &order);
    let (reduction, _) = tred::dag_transitive_reduction_closure(&list);
    let mut edges: Vec<(NodeIndex, NodeIndex)> = reduction
        .edge_indices()
        .filter_map(|e| reduction.edge_endpoints(e))
        .map(|(a, b)| (order[a as usize], order[b as usize]))
        .collect();
    edges.sort();
    edges
}

/// Where a step acts, for people: `aws://ACCOUNT/REGION` of a Deploy, or of a Publish's destination (as written:
/// `${env:...}` left as is).
pub fn environment(plan: &Plan, step: usize) -> Option<String> {
    match &plan.pipeline.loaded.pipeline.steps[step].kind {
        StepKind::Deploy(d) => Some(format!("aws://{}/{}", d.account, d.region)),
        StepKind::Publish(p) => match &p.assets {
            PublishAssets::Files { destination: d, .. } => Some(format!("aws://{}/{}", d.account, d.region)),
            PublishAssets::Assembly { stage, .. } => Some(format!("stage {stage}")),
        },
        _ => None,
    }
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
