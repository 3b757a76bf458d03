//! Mermaid flowchart: renders in GitHub Markdown inside a ```mermaid block. The parts of a step share a subgraph
//! named for the step and where it acts, as DOT's clusters do; only the edges not implied by others.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::plan::Plan;

fn label(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// The plan as a Mermaid flowchart.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut kinds = Vec::new();
    let mut subgraphs: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut classes = Vec::new();
    for n in plan.graph.node_indices() {
        let node = &plan.graph[n];
        // Inside its step's subgraph a part is named by itself (`DataLakeVpc`): the subgraph names the step.
        let mut text = format!("{}<br/>{}", label(node.part().unwrap_or(&node.id)), node.kind);
        if node.part().is_none() {
            if let Some(env) = super::environment(plan, node.step) {
                let _ = write!(text, "<br/>{}", label(&env));
            }
        }
        if node.expands_at_run_time {
            text.push_str("<br/><i>expands at run time</i>");
        }
        let (open, close) = match node.kind {
            "Source" => ("[(", ")]"),
            "Approval" => ("{", "}"),
            "Deploy" => ("[/", "/]"),
            _ if node.expands_at_run_time => ("[[", "]]"),
            _ => ("[", "]"),
        };
        let line = format!("n{}{open}\"{text}\"{close}", n.index());
        if node.part().is_some() {
            subgraphs.entry(node.step).or_default().push(line);
        } else {
            let _ = writeln!(out, "  {line}");
        }
        classes.push(format!("  class n{} {};", n.index(), node.kind.to_lowercase()));
        if !kinds.contains(&node.kind) {
            kinds.push(node.kind);
        }
    }
    for (step, lines) in subgraphs {
        let id = &plan.pipeline.loaded.pipeline.steps[step].id;
        let mut title = label(id);
        if let Some(env) = super::environment(plan, step) {
            let _ = write!(title, "<br/>{}", label(&env));
        }
        let _ = writeln!(out, "  subgraph s{step}[\"{title}\"]");
        for line in lines {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out, "  end");
    }
    for (from, to) in super::reduced_edges(plan) {
        let _ = writeln!(out, "  n{} --> n{}", from.index(), to.index());
    }
    for class in classes {
        out.push_str(&class);
        out.push('\n');
    }
    for kind in kinds {
        let _ = writeln!(out, "  classDef {} fill:{},stroke:#555;", kind.to_lowercase(), super::colour(kind));
    }
    out
}
