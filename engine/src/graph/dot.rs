//! Graphviz DOT: `dot -Tsvg` renders it. Shapes and colours by step kind; the parts of a step (a stage's stacks, an
//! assembly's assets) share a cluster named for the step and where it acts; one font throughout; only the edges
//! not implied by others.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::plan::Plan;

/// The one font of every label: graph, clusters, nodes and edges.
const FONT: &str = "Helvetica";

fn shape(kind: &str) -> &'static str {
    match kind {
        "Source" => "cylinder",
        "Shell" => "box",
        "Deploy" => "component",
        "Publish" => "folder",
        "Approval" => "diamond",
        "SelfUpdate" => "hexagon",
        _ => "box",
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A label's text: quoted, lines joined with DOT's `\n`.
fn label(lines: &[&str]) -> String {
    let quoted: Vec<String> = lines.iter().map(|l| l.replace('\\', "\\\\").replace('"', "\\\"")).collect();
    format!("\"{}\"", quoted.join("\\n"))
}

/// The plan as a DOT digraph.
pub fn dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&plan.pipeline.loaded.pipeline.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  graph [fontname=\"{FONT}\"];");
    let _ = writeln!(out, "  node [fontname=\"{FONT}\", style=\"rounded,filled\"];");
    let _ = writeln!(out, "  edge [fontname=\"{FONT}\"];");
    let mut clusters: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for n in plan.graph.node_indices() {
        let node = &plan.graph[n];
        let style = if node.expands_at_run_time { ", style=\"rounded,filled,dashed\"" } else { "" };
        let env = super::environment(plan, node.step);
        // Inside its step's cluster a part is named by itself (`DataLakeVpc`): the cluster names the step.
        let mut lines: Vec<&str> = vec![node.part().unwrap_or(&node.id), node.kind];
        // A step of its own says where it acts; the parts of a step say it once, on their cluster.
        if node.part().is_none() {
            lines.extend(env.as_deref());
        }
        if node.expands_at_run_time {
            lines.push("(expands at run time)");
        }
        let line = format!(
            "{} [label={}, shape={}, fillcolor=\"{}\"{style}];",
            quote(&node.id),
            label(&lines),
            shape(node.kind),
            super::colour(node.kind)
        );
        if node.part().is_some() {
            clusters.entry(node.step).or_default().push(line);
        } else {
            let _ = writeln!(out, "  {line}");
        }
    }
    for (step, lines) in clusters {
        let id = &plan.pipeline.loaded.pipeline.steps[step].id;
        let env = super::environment(plan, step);
        let mut title: Vec<&str> = vec![id];
        title.extend(env.as_deref());
        let _ = writeln!(out, "  subgraph {} {{", quote(&format!("cluster_{id}")));
        let _ = writeln!(out, "    label={};", label(&title));
        for line in lines {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out, "  }}");
    }
    for (from, to) in super::reduced_edges(plan) {
        let _ = writeln!(out, "  {} -> {};", quote(&plan.graph[from].id), quote(&plan.graph[to].id));
    }
    out.push_str("}\n");
    out
}
