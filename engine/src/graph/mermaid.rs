//! Mermaid flowchart: renders in GitHub Markdown inside a ```mermaid block.

use std::fmt::Write;

use crate::plan::Plan;

fn label(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// The plan as a Mermaid flowchart.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut kinds = Vec::new();
    for n in plan.graph.node_indices() {
        let node = &plan.graph[n];
        let text = if node.expands_at_run_time {
            format!("{}<br/>{}<br/><i>expands at run time</i>", label(&node.id), node.kind)
        } else {
            format!("{}<br/>{}", label(&node.id), node.kind)
        };
        let (open, close) = match node.kind {
            "Source" => ("[(", ")]"),
            "Approval" => ("{", "}"),
            "Deploy" => ("[/", "/]"),
            _ if node.expands_at_run_time => ("[[", "]]"),
            _ => ("[", "]"),
        };
        let _ = writeln!(out, "  n{}{open}\"{text}\"{close}", n.index());
        let _ = writeln!(out, "  class n{} {};", n.index(), node.kind.to_lowercase());
        if !kinds.contains(&node.kind) {
            kinds.push(node.kind);
        }
    }
    for e in plan.graph.raw_edges() {
        let _ = writeln!(out, "  n{} --> n{}", e.source().index(), e.target().index());
    }
    for kind in kinds {
        let _ = writeln!(out, "  classDef {} fill:{},stroke:#555;", kind.to_lowercase(), super::colour(kind));
    }
    out
}
