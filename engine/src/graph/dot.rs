//! Graphviz DOT: `dot -Tsvg` renders it. Shapes and colours by step kind; parts of a step share a cluster.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::plan::Plan;

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

/// The plan as a DOT digraph.
pub fn dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&plan.pipeline.loaded.pipeline.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", style=\"rounded,filled\"];");
    let mut clusters: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for n in plan.graph.node_indices() {
        let node = &plan.graph[n];
        let style = if node.expands_at_run_time { ", style=\"rounded,filled,dashed\"" } else { "" };
        let note = if node.expands_at_run_time { "\\n(expands at run time)" } else { "" };
        let line = format!(
            "{} [label=\"{}\\n{}{note}\", shape={}, fillcolor=\"{}\"{style}];",
            quote(&node.id),
            node.id.replace('"', "\\\""),
            node.kind,
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
        let _ = writeln!(out, "  subgraph {} {{", quote(&format!("cluster_{id}")));
        let _ = writeln!(out, "    label={};", quote(id));
        for line in lines {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out, "  }}");
    }
    for e in plan.graph.raw_edges() {
        let _ = writeln!(out, "  {} -> {};", quote(&plan.graph[e.source()].id), quote(&plan.graph[e.target()].id));
    }
    out.push_str("}\n");
    out
}
