//! Pictures of a run: the DAG laid out by Graphviz `dot` as SVG (when `dot` is installed; the page falls back to
//! the waves as plain boxes), each node a `<g id="dag_<hex of its id>">` whose class says its status so that CSS
//! colours it and the page's script recolours it live; and the timeline (a Gantt chart of the nodes' start and
//! duration, the critical path marked), drawn as SVG here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use maud::{html, Markup, PreEscaped};

use super::view::{NodeView, RunView};

/// Above this many nodes the DAG is shown as waves only (a picture of thousands of boxes helps nobody).
pub const MAX_DRAWN_NODES: usize = 300;

/// A node's id in HTML and SVG ids: the hex of its bytes after a prefix (`dag_`, `status_`, `log_`; the page's
/// script computes the same). No `-`: Graphviz would write it as an entity.
pub fn html_id(node: &str) -> String {
    hex::encode(node.as_bytes())
}

/// `dot` on the PATH, unless `RUNNER_DOT` names another (or `none`).
pub fn find_dot() -> Option<PathBuf> {
    match std::env::var("RUNNER_DOT") {
        Ok(v) if v == "none" || v.is_empty() => return None,
        Ok(v) => return Some(PathBuf::from(v)).filter(|p| p.is_file()),
        Err(_) => {}
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("dot")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

/// Layouts already made, by the graph's DOT text (a run's layout does not change with its statuses).
#[derive(Default)]
pub struct Cache(Mutex<HashMap<String, Arc<str>>>);

/// Layouts kept.
const CACHED: usize = 64;

/// Only characters that need no escaping anywhere: a label shows them, others become `?`.
fn label(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || " _-/.:()".contains(c) { c } else { '?' }).collect()
}

fn dot_text(nodes: &[NodeView]) -> String {
    let mut out = String::from(
        "digraph run {\n  rankdir=LR;\n  bgcolor=\"transparent\";\n  node [shape=box, style=\"rounded,filled\", \
         fillcolor=\"#ffffff\", fontname=\"sans-serif\", fontsize=11];\n  edge [color=\"#888888\"];\n",
    );
    for n in nodes {
        out.push_str(&format!(
            "  \"{}\" [id=\"dag_{}\", label=\"{}\"];\n",
            html_id(&n.id),
            html_id(&n.id),
            label(&n.id)
        ));
    }
    for n in nodes {
        for need in &n.needs {
            if nodes.iter().any(|m| &m.id == need) {
                out.push_str(&format!("  \"{}\" -> \"{}\";\n", html_id(need), html_id(&n.id)));
            }
        }
    }
    out.push_str("}\n");
    out
}

/// The DAG as SVG with each node's status as its class, or `None` (no `dot`, too many nodes, `dot` failed): the
/// page then shows the waves.
pub async fn dag_svg(dot: Option<&PathBuf>, cache: &Cache, nodes: &[NodeView]) -> Option<String> {
    let dot = dot?;
    if nodes.is_empty() || nodes.len() > MAX_DRAWN_NODES {
        return None;
    }
    let text = dot_text(nodes);
    let cached = cache.0.lock().unwrap_or_else(|e| e.into_inner()).get(&text).cloned();
    let svg = match cached {
        Some(svg) => svg,
        None => {
            let svg: Arc<str> = Arc::from(run_dot(dot, &text).await?);
            let mut map = cache.0.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= CACHED {
                map.clear();
            }
            map.insert(text, Arc::clone(&svg));
            svg
        }
    };
    let mut out = svg.to_string();
    for n in nodes {
        let plain = format!("<g id=\"dag_{}\" class=\"node\">", html_id(&n.id));
        let coloured = format!("<g id=\"dag_{}\" class=\"node s-{}\">", html_id(&n.id), status_class(&n.status));
        out = out.replacen(&plain, &coloured, 1);
    }
    Some(out)
}

/// The status as a CSS class (`up-to-date` stays as is).
pub fn status_class(status: &str) -> &str {
    match status {
        "pending" | "running" | "waiting" | "succeeded" | "failed" | "skipped" | "cancelled" | "unchanged"
        | "up-to-date" | "interrupted" | "starting" => status,
        _ => "pending",
    }
}

async fn run_dot(dot: &PathBuf, text: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(dot)
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = text.to_string();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.ok()?.ok()?;
    let _ = writer.await;
    if !output.status.success() {
        return None;
    }
    let svg = String::from_utf8(output.stdout).ok()?;
    // Keep the <svg> element only (no XML prolog or doctype inside HTML).
    let start = svg.find("<svg")?;
    Some(svg[start..].to_string())
}

/// The waves of the DAG (each node after everything it needs), for the plain picture.
pub fn waves(nodes: &[NodeView]) -> Vec<Vec<&NodeView>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    for _ in 0..nodes.len().clamp(1, 64) {
        let mut changed = false;
        for n in nodes {
            let d = n.needs.iter().filter_map(|m| depth.get(m.as_str())).map(|d| d + 1).max().unwrap_or(0);
            if depth.insert(&n.id, d) != Some(d) {
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut waves: Vec<Vec<&NodeView>> = Vec::new();
    for n in nodes {
        let d = depth.get(n.id.as_str()).copied().unwrap_or(0);
        if waves.len() <= d {
            waves.resize_with(d + 1, Vec::new);
        }
        waves[d].push(n);
    }
    waves
}

/// The Gantt chart of a run: a bar per node that started, from its start to its end (or now), coloured by status;
/// the critical path's bars outlined and listed.
pub fn timeline(view: &RunView) -> Markup {
    const LABEL: f64 = 220.0;
    const BARS: f64 = 560.0;
    const ROW: f64 = 20.0;
    let Some(start) = view.started_at else {
        return html! { p.muted { "no step has started yet" } };
    };
    let now = SystemTime::now();
    let span = |n: &NodeView| -> Option<(f64, f64)> {
        let s = n.started_at?;
        let offset = s.duration_since(start).unwrap_or_default().as_secs_f64() * 1000.0;
        let length = match n.duration_ms {
            Some(d) => d as f64,
            None if !n.is_done() => now.duration_since(s).unwrap_or_default().as_secs_f64() * 1000.0,
            None => 0.0,
        };
        Some((offset, length))
    };
    let mut rows: Vec<(&NodeView, f64, f64)> =
        view.nodes.iter().filter_map(|n| span(n).map(|(o, l)| (n, o, l))).collect();
    if rows.is_empty() {
        return html! { p.muted { "no step has started yet" } };
    }
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let total = rows.iter().map(|(_, o, l)| o + l).fold(view.elapsed().as_secs_f64() * 1000.0, f64::max).max(1.0);
    let critical = view.critical_path();
    let height = ROW * rows.len() as f64 + 30.0;
    let width = LABEL + BARS + 10.0;
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" {
            title { "timeline of the run's steps" }
            @for (i, (n, offset, length)) in rows.iter().enumerate() {
                @let y = ROW * i as f64;
                @let x = LABEL + offset / total * BARS;
                @let w = (length / total * BARS).max(2.0);
                @let on_path = critical.contains(&n.id);
                text.label x="0" y=(y + 14.0) { (n.id) }
                rect id=(format!("bar_{}", html_id(&n.id)))
                    class=(format!("bar s-{}{}", status_class(&n.status), if on_path { " critical" } else { "" }))
                    x=(format!("{x:.1}")) y=(y + 3.0) width=(format!("{w:.1}")) height=(ROW - 6.0) rx="3" {
                    title { (n.id) ": " (n.status) ", " (super::web::ms(n.duration_ms.unwrap_or(*length as u64))) }
                }
            }
            @let axis = ROW * rows.len() as f64 + 16.0;
            text.axis x=(LABEL) y=(axis) { "0s" }
            text.axis x=(LABEL + BARS) y=(axis) text-anchor="end" { (super::web::ms(total as u64)) }
        }
        @if !critical.is_empty() {
            p.critical-path { "critical path: " (critical.join(" → ")) }
        }
    }
}

/// Markup from trusted SVG text (`dot`'s output of labels made of safe characters only).
pub fn trusted(svg: String) -> PreEscaped<String> {
    PreEscaped(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, needs: &[&str]) -> NodeView {
        NodeView { id: id.into(), needs: needs.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn labels_keep_only_characters_that_need_no_escaping() {
        assert_eq!(label("deploy/Dev-S3Stack"), "deploy/Dev-S3Stack");
        assert_eq!(label("<script>\"x\"&"), "?script??x??");
    }

    #[test]
    fn waves_put_each_node_after_what_it_needs() {
        let nodes = vec![
            node("deploy", &["build", "test"]),
            node("source", &[]),
            node("build", &["source"]),
            node("test", &["source"]),
        ];
        let ids: Vec<Vec<&str>> = waves(&nodes).iter().map(|w| w.iter().map(|n| n.id.as_str()).collect()).collect();
        assert_eq!(ids, vec![vec!["source"], vec!["build", "test"], vec!["deploy"]]);
    }

    #[test]
    fn the_dot_text_names_nodes_by_their_hex_ids() {
        let text = dot_text(&[node("a", &[]), node("b/c", &["a"])]);
        assert!(text.contains("\"61\" [id=\"dag_61\", label=\"a\"]"), "{text}");
        assert!(text.contains("\"61\" -> \"622f63\""), "{text}");
    }
}
