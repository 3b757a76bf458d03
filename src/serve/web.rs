//! The dashboard: HTML made in this process (maud templates, checked when compiled; every text from pipelines and
//! logs escaped), readable without JavaScript; a small script (`/static/app.js`) follows a live run through
//! server-sent events. Handlers read run records and subscribe to live runs; they act only through the queue
//! (trigger) and a live run's handles (approve, reject, cancel), after [`super::auth`] said they may.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use engine::model::{PublishAssets, StepKind};
use engine::record::RunState;
use futures_util::stream::Stream;
use maud::{html, Markup, DOCTYPE};
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;

use super::auth::{Actor, Refusal};
use super::graph::{self, html_id, status_class};
use super::queue::{Offer, PollState, Slot};
use super::record::{short, RunMeta, Trigger};
use super::view::{self, NodeView, RunSummary, RunView};
use super::Server;

/// Runs per page of a pipeline's history.
pub const HISTORY_PAGE: usize = 50;
/// Log lines shown per node on a run's page.
const LOG_LINES: usize = 200;

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
     form-action 'self'; base-uri 'none'";

pub fn router(server: Arc<Server>) -> Router {
    let reads = Router::new()
        .route("/", get(index))
        .route("/pipelines/{pipeline}", get(pipeline_page))
        .route("/pipelines/{pipeline}/runs/{run}", get(run_page))
        .route("/pipelines/{pipeline}/runs/{run}/timeline.svg", get(timeline_svg))
        .route("/pipelines/{pipeline}/runs/{run}/events", get(run_events))
        .route("/pipelines/{pipeline}/runs/{run}/logs/{*node}", get(log_file))
        .merge(super::api::reads())
        .route_layer(middleware::from_fn_with_state(Arc::clone(&server), require_read));
    let acts = Router::new()
        .route("/pipelines/{pipeline}/trigger", post(trigger_form))
        .route("/pipelines/{pipeline}/runs/{run}/approvals/{*node}", post(approval_form))
        .route("/pipelines/{pipeline}/runs/{run}/cancel", post(cancel_form))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/hooks/github", post(super::hook::github))
        .route("/static/app.js", get(script))
        .route("/static/style.css", get(style))
        .merge(super::api::acts());
    Router::new()
        .merge(reads)
        .merge(acts)
        .fallback(|| async { not_found("no such page") })
        .layer(axum::extract::DefaultBodyLimit::max(25 * 1024 * 1024))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .with_state(server)
}

/// `--private`: pages and the API need the token (pages send people to the login form).
async fn require_read(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    if server.auth.can_read(request.headers(), server.private) {
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "this server needs the token to read"})),
        )
            .into_response();
    }
    let next_url = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    Redirect::to(&format!("/login?next={}", urlencoding::encode(&next_url))).into_response()
}

// -------------------------------------------------------------------------------------------------------------
// Data the pages and the API share
// -------------------------------------------------------------------------------------------------------------

/// A pipeline as listed.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    pub name: String,
    pub file: String,
    pub sources: Vec<SourceSummary>,
    /// The AWS accounts its Deploy and Publish steps act in.
    pub accounts: Vec<String>,
    pub last_run: Option<RunSummary>,
    /// The run in progress in this server.
    pub running: Option<String>,
    /// The trigger waiting for it.
    pub waiting: Option<Trigger>,
    pub last_check: PollState,
    /// Why the last trigger ran nothing (the pipeline file could not be loaded), if so.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub step: String,
    /// Without credentials.
    pub repository: String,
    /// `branch dev`, `tag v1`, `commit abc`, `the default branch`.
    pub reference: String,
}

pub fn summarize(server: &Server, slot: &Slot) -> PipelineSummary {
    let model = slot.model();
    let sources = model
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Source(spec) => Some(SourceSummary {
                step: s.id.to_string(),
                repository: steps::source::scrub_url(&spec.repository),
                reference: match &spec.reference {
                    Some(engine::model::GitReference::Branch(b)) => format!("branch {b}"),
                    Some(engine::model::GitReference::Tag(t)) => format!("tag {t}"),
                    Some(engine::model::GitReference::Commit(c)) => format!("commit {}", short(c)),
                    None => "the default branch".into(),
                },
            }),
            _ => None,
        })
        .collect();
    let mut accounts = BTreeSet::new();
    for s in &model.steps {
        match &s.kind {
            StepKind::Deploy(d) => {
                accounts.insert(d.account.clone());
            }
            StepKind::Publish(p) => {
                if let PublishAssets::Files { destination, .. } = &p.assets {
                    accounts.insert(destination.account.clone());
                }
            }
            _ => {}
        }
    }
    let (running, waiting, last_error) = {
        let state = slot.state();
        (
            state.running.as_ref().map(|r| r.run_id().unwrap_or_default()),
            state.waiting.clone(),
            state.record.last_started.as_ref().and_then(|s| s.error.clone()),
        )
    };
    let last_run = history(server, slot, None, 1).0.into_iter().next();
    PipelineSummary {
        name: slot.name.clone(),
        file: slot.file.display().to_string(),
        sources,
        accounts: accounts.into_iter().collect(),
        last_run,
        running,
        waiting,
        last_check: slot.polls.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        last_error,
    }
}

/// The newest runs of a pipeline (older than `before` when given), at most `limit`; and the id to page on from.
pub fn history(server: &Server, slot: &Slot, before: Option<&str>, limit: usize) -> (Vec<RunSummary>, Option<String>) {
    let runs = crate::runs::runs_of(&server.state_dir, &slot.name);
    let mut picked: Vec<(String, PathBuf)> =
        runs.into_iter().rev().filter(|(id, _)| before.is_none_or(|b| id.as_str() < b)).take(limit + 1).collect();
    let more = picked.len() > limit;
    picked.truncate(limit);
    let next = if more { picked.last().map(|(id, _)| id.clone()) } else { None };
    let summaries = picked.iter().filter_map(|(id, dir)| run_summary(server, slot, id, dir)).collect();
    (summaries, next)
}

fn run_summary(server: &Server, slot: &Slot, run_id: &str, dir: &Path) -> Option<RunSummary> {
    if let Some(live) = slot.live(run_id) {
        return Some(RunSummary::of(&live.view()));
    }
    if let Some(s) = slot.summaries.lock().unwrap_or_else(|e| e.into_inner()).get(run_id) {
        return Some(s.clone());
    }
    let (view, _) = record_view(server, slot, run_id, dir)?;
    let summary = RunSummary::of(&view);
    if view.finished.is_some() {
        slot.summaries.lock().unwrap_or_else(|e| e.into_inner()).insert(run_id.to_string(), summary.clone());
    }
    Some(summary)
}

/// A run from its record: the view, and its state.
fn record_view(server: &Server, slot: &Slot, run_id: &str, dir: &Path) -> Option<(RunView, RunState)> {
    let state = RunState::load(dir).ok()?;
    let meta = RunMeta::load(&server.dir(), run_id);
    let unfinished = state.finished.is_none() && matches!(state.status.as_str(), "running" | "starting");
    let interrupted = unfinished && !view::locked_by_another(&server.state_dir, &slot.name);
    Some((RunView::from_record(&slot.name, &state, meta.as_ref(), interrupted), state))
}

/// A run by id: live in this server, or from its record. `None`: no such run of the pipeline.
pub fn find_run(server: &Server, slot: &Slot, run_id: &str) -> Option<(RunView, PathBuf)> {
    let dir = engine::walk::run_dir(&server.state_dir, run_id);
    if let Some(live) = slot.live(run_id) {
        return Some((live.view().clone(), dir));
    }
    // Only a run of this pipeline, by its exact id (never a path from the URL).
    let runs = crate::runs::runs_of(&server.state_dir, &slot.name);
    let (_, dir) = runs.into_iter().find(|(id, _)| id == run_id)?;
    record_view(server, slot, run_id, &dir).map(|(view, _)| (view, dir))
}

/// The last `lines` lines of a node's log file (the file's last 256 KiB at most).
pub fn log_tail(run_dir: &Path, node: &str, lines: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut path = run_dir.join(engine::walk::node_file_stem(node));
    path.set_extension("log");
    let Ok(mut file) = std::fs::File::open(&path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(256 * 1024);
    if file.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if from > 0 && !all.is_empty() {
        // Cut mid-line by the seek.
        all.remove(0);
    }
    let skip = all.len().saturating_sub(lines);
    all[skip..].iter().map(|s| s.to_string()).collect()
}

// -------------------------------------------------------------------------------------------------------------
// Formatting
// -------------------------------------------------------------------------------------------------------------

/// `850ms`, `12.3s`, `4m05s`.
pub fn ms(ms: u64) -> String {
    crate::report::format_duration(Duration::from_millis(ms))
}

/// `12s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn age(rfc3339: &str) -> String {
    let Some(t) = view::parse_time(rfc3339) else { return "-".into() };
    let s = SystemTime::now().duration_since(t).unwrap_or_default().as_secs();
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge s-{}", status_class(status))) { (status) } }
}

fn run_link(pipeline: &str, run_id: &str) -> String {
    format!("/pipelines/{}/runs/{}", urlencoding::encode(pipeline), urlencoding::encode(run_id))
}

fn pipeline_link(pipeline: &str) -> String {
    format!("/pipelines/{}", urlencoding::encode(pipeline))
}

fn describe_cause(trigger: &Option<Trigger>) -> String {
    trigger.as_ref().map(|t| t.cause.to_string()).unwrap_or_else(|| "runner run".into())
}

/// What the page knows about the visitor.
struct Visitor {
    csrf: Option<String>,
}

fn visitor(server: &Server, headers: &HeaderMap) -> Visitor {
    Visitor { csrf: server.auth.session(headers) }
}

fn layout(title: &str, visitor: &Visitor, here: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · runner" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/app.js" defer {}
            }
            body {
                header {
                    a.home href="/" { "runner" }
                    nav {
                        @if let Some(csrf) = &visitor.csrf {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "log out" }
                            }
                        } @else {
                            a href=(format!("/login?next={}", urlencoding::encode(here))) { "log in to act" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    page.into_response()
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = html! { h1 { (title) } p { (text) } p { a href="/" { "back to the pipelines" } } };
    (status, layout(title, &Visitor { csrf: None }, "/", body)).into_response()
}

pub fn not_found(text: &str) -> Response {
    message_page(StatusCode::NOT_FOUND, "not found", text)
}

/// A form that acts: its CSRF token, or a link to log in.
fn action_form(
    visitor: &Visitor,
    action: &str,
    here: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
) -> Markup {
    html! {
        @if let Some(csrf) = &visitor.csrf {
            form.inline method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" class=(class) { (label) }
            }
        } @else {
            a.action href=(format!("/login?next={}", urlencoding::encode(here))) { "log in to " (label.to_lowercase()) }
        }
    }
}

// -------------------------------------------------------------------------------------------------------------
// Pages
// -------------------------------------------------------------------------------------------------------------

async fn index(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let visitor = visitor(&server, &headers);
    let summaries: Vec<PipelineSummary> = server.pipelines.iter().map(|s| summarize(&server, s)).collect();
    let body = html! {
        h1 { "pipelines" }
        table.pipelines {
            thead { tr { th { "pipeline" } th { "watches" } th { "accounts" } th { "last run" } th { "commit" } th { "queue" } th { "last check" } th { } } }
            tbody {
                @for p in &summaries {
                    tr id=(format!("pipeline_{}", html_id(&p.name))) {
                        td { a href=(pipeline_link(&p.name)) { (p.name) } }
                        td {
                            @for s in &p.sources {
                                div { (s.reference) " of " code { (s.repository) } }
                            }
                        }
                        td { (p.accounts.join(", ")) }
                        td {
                            @if let Some(r) = &p.last_run {
                                a href=(run_link(&p.name, &r.run_id)) { (badge(&r.status)) } " " span.muted { (age(&r.started)) }
                            } @else { span.muted { "never ran" } }
                        }
                        td { @if let Some(c) = p.last_run.as_ref().and_then(|r| r.commit.as_ref()) { code { (short(c)) } } }
                        td {
                            @if let Some(id) = &p.running { "running " a href=(run_link(&p.name, id)) { (id) } }
                            @if let Some(w) = &p.waiting { div { "waiting: " code { (w.short_commit()) } } }
                            @if p.running.is_none() && p.waiting.is_none() { span.muted { "idle" } }
                        }
                        td {
                            @match &p.last_check.checked_at { Some(t) => { (age(t)) }, None => { span.muted { "not yet" } } }
                            @if let Some(e) = &p.last_check.error { div.error { (e) } }
                        }
                        td { (action_form(&visitor, &format!("{}/trigger", pipeline_link(&p.name)), "/", &[], "Run now", "")) }
                    }
                }
            }
        }
    };
    layout("pipelines", &visitor, "/", body)
}

#[derive(Deserialize)]
pub struct Page {
    pub before: Option<String>,
}

async fn pipeline_page(
    State(server): State<Arc<Server>>,
    UrlPath(name): UrlPath<String>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let Some(slot) = server.slot(&name) else { return not_found("no such pipeline") };
    let visitor = visitor(&server, &headers);
    let summary = summarize(&server, slot);
    let (runs, next) = history(&server, slot, page.before.as_deref(), HISTORY_PAGE);
    let superseded: Vec<_> = slot.state().record.superseded.iter().rev().take(20).cloned().collect();
    let here = pipeline_link(&name);
    let body = html! {
        h1 { "pipeline " (name) }
        p.muted { (summary.file) }
        section {
            @for s in &summary.sources { p { "watches " (s.reference) " of " code { (s.repository) } " (step " code { (s.step) } ")" } }
            @if !summary.accounts.is_empty() { p { "deploys to " (summary.accounts.join(", ")) } }
            @if let Some(e) = &summary.last_error { pre.error { (e) } }
            @if let Some(e) = &summary.last_check.error { p.error { "last check: " (e) } }
            p { (action_form(&visitor, &format!("{here}/trigger"), &here, &[], "Run now", "")) }
        }
        section {
            h2 { "queue" }
            @if let Some(id) = &summary.running { p { "running " a href=(run_link(&name, id)) { (id) } } }
            @if let Some(w) = &summary.waiting { p { "waiting: " code { (w.short_commit()) } " (" (w.cause) ", queued " (age(&w.queued_at)) ")" } }
            @if summary.running.is_none() && summary.waiting.is_none() { p.muted { "nothing running or waiting" } }
        }
        section {
            h2 { "history" }
            @if runs.is_empty() { p.muted { "no runs yet" } } @else {
                table.history {
                    thead { tr { th { "run" } th { "status" } th { "commit" } th { "trigger" } th { "started" } th { "duration" } } }
                    tbody {
                        @for r in &runs {
                            tr {
                                td { a href=(run_link(&name, &r.run_id)) { (r.run_id) } }
                                td { (badge(&r.status)) }
                                td { @if let Some(c) = &r.commit { code { (short(c)) } } }
                                td { (describe_cause(&r.trigger)) }
                                td { (r.started) }
                                td { @match r.duration_ms { Some(d) => { (ms(d)) }, None => { "-" } } }
                            }
                        }
                    }
                }
                @if let Some(n) = &next { p { a href=(format!("{here}?before={}", urlencoding::encode(n))) { "older runs" } } }
            }
        }
        @if !superseded.is_empty() {
            section {
                h2 { "superseded" }
                p.muted { "commits that waited while a run was in progress and were replaced by a newer one before they ran" }
                table.superseded {
                    thead { tr { th { "commit" } th { "trigger" } th { "queued" } th { "superseded by" } } }
                    tbody {
                        @for s in &superseded {
                            tr {
                                td { code { (s.trigger.short_commit()) } }
                                td { (s.trigger.cause) }
                                td { (s.trigger.queued_at) }
                                td { code { (s.by.values().next().map(|c| short(c)).unwrap_or_default()) } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&format!("pipeline {name}"), &visitor, &here, body)
}

async fn run_page(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(slot) = server.slot(&name) else { return not_found("no such pipeline") };
    let Some((view, run_dir)) = find_run(&server, slot, &run_id) else { return not_found("no such run") };
    let visitor = visitor(&server, &headers);
    let here = run_link(&name, &run_id);
    let dag = graph::dag_svg(server.dot.as_ref(), &server.graphs, &view.nodes).await;
    let waiting: Vec<&NodeView> = view.nodes.iter().filter(|n| n.status == "waiting").collect();
    let logs: Vec<(String, Vec<String>)> = view
        .nodes
        .iter()
        .filter(|n| n.status != "pending")
        .map(|n| {
            let lines = if view.live { n.tail.iter().cloned().collect() } else { log_tail(&run_dir, &n.id, LOG_LINES) };
            (n.id.clone(), lines)
        })
        .collect();
    let events = view.live.then(|| format!("{here}/events"));
    let body = html! {
        div #run data-events=[events.as_deref()] data-timeline=(format!("{here}/timeline.svg")) {
            h1 { "run " (run_id) }
            p {
                span #run-status class=(format!("badge s-{}", status_class(&view.status))) { (view.status) }
                " of " a href=(pipeline_link(&name)) { (name) }
                @if let Some(c) = &view.commit { " at " code { (short(c)) } }
                @else if let Some(t) = &view.trigger { " for " code { (t.short_commit()) } }
                " · " (describe_cause(&view.trigger))
                @if let Some(s) = &view.started { " · started " (s) }
                @if let Some(d) = view.duration_ms { " · took " (ms(d)) }
            }
            @if view.live {
                p { (action_form(&visitor, &format!("{here}/cancel"), &here, &[], "Cancel", "danger")) }
                noscript { p.muted { "this page does not update itself without JavaScript: reload it to see the run go on" } }
            }
            @if let Some(e) = &view.error { h2 { "nothing ran" } pre.error { (e) } }
            @if !view.notices.is_empty() { ul.notices #notices { @for n in &view.notices { li { (n) } } } } @else { ul.notices #notices {} }
            @for n in &waiting {
                section.approval id=(format!("approval_{}", html_id(&n.id))) {
                    h2 { "approval: " (n.id) }
                    p.message { (n.approval.clone().unwrap_or_default()) }
                    @let downstream = view.downstream_of(&n.id);
                    p { "approving lets these run:" }
                    @if downstream.is_empty() { p.muted { "nothing more (it is the last step)" } } @else {
                        ul { @for d in &downstream { li { code { (d.id) } " " span.muted { (d.description) } } } }
                    }
                    @let action = format!("{here}/approvals/{}", n.id);
                    (action_form(&visitor, &action, &here, &[("decision", "approve")], "Approve", "approve"))
                    " "
                    (action_form(&visitor, &action, &here, &[("decision", "reject")], "Reject", "danger"))
                }
            }
            section {
                h2 { "graph" }
                @match dag {
                    Some(svg) => { div.dag { (graph::trusted(svg)) } },
                    None => {
                        div.waves {
                            @for wave in graph::waves(&view.nodes) {
                                div.wave { @for n in wave { div id=(format!("dag_{}", html_id(&n.id))) class=(format!("dag-node s-{}", status_class(&n.status))) { (n.id) } } }
                            }
                        }
                    },
                }
            }
            section {
                h2 { "steps" }
                table.steps {
                    thead { tr { th { "step" } th { "kind" } th { "status" } th { "attempt" } th { "started" } th { "duration" } th { "what it does" } } }
                    tbody {
                        @for n in &view.nodes {
                            tr id=(format!("row_{}", html_id(&n.id))) {
                                td { code { (n.id) } }
                                td { (n.kind) }
                                td id=(format!("status_{}", html_id(&n.id))) class=(format!("status s-{}", status_class(&n.status))) { (n.status) }
                                td id=(format!("attempt_{}", html_id(&n.id))) { @if n.attempt > 0 { (n.attempt) } }
                                td { (n.started.clone().unwrap_or_default()) }
                                td { @if let Some(d) = n.duration_ms { (ms(d)) } }
                                td {
                                    span.muted { (n.description) }
                                    @if let Some(e) = &n.error { pre.error { (e) } }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "timeline" }
                div #timeline { (graph::timeline(&view)) }
            }
            section {
                h2 { "logs" }
                @for (node, lines) in &logs {
                    details open[view.live] {
                        summary { code { (node) } " · " a href=(format!("{here}/logs/{node}")) { "whole log" } }
                        pre.log id=(format!("log_{}", html_id(node))) { @for l in lines { (l) "\n" } }
                    }
                }
                @if logs.is_empty() { p.muted { "no step has started yet" } }
            }
            section {
                h2 { "outputs" }
                @let with_outputs: Vec<&NodeView> = view.nodes.iter().filter(|n| !n.outputs.is_empty()).collect();
                @if with_outputs.is_empty() { p.muted { "none yet" } }
                @for n in with_outputs {
                    h3 { code { (n.id) } }
                    table.outputs { tbody { @for (k, v) in &n.outputs { tr { td { code { (k) } } td { code { (v) } } } } } }
                }
            }
        }
    };
    layout(&format!("run {run_id}"), &visitor, &here, body)
}

async fn timeline_svg(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id)): UrlPath<(String, String)>,
) -> Response {
    let Some(slot) = server.slot(&name) else { return not_found("no such pipeline") };
    let Some((view, _)) = find_run(&server, slot, &run_id) else { return not_found("no such run") };
    let mut response = graph::timeline(&view).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn log_file(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id, node)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(slot) = server.slot(&name) else { return not_found("no such pipeline") };
    let Some((view, dir)) = find_run(&server, slot, &run_id) else { return not_found("no such run") };
    // Only a node of the run (never a path from the URL).
    if view.node(&node).is_none() {
        return not_found("no such step in this run");
    }
    let mut path = dir.join(engine::walk::node_file_stem(&node));
    path.set_extension("log");
    let text = std::fs::read(&path).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Server-sent events of a run: a `sync` event with the statuses now, then every event as `runner run --output
/// json` prints it (plus `notice`, `run_recorded`, `run_not_started`); a finished run sends `sync` and ends.
pub async fn run_events(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id)): UrlPath<(String, String)>,
) -> Response {
    let Some(slot) = server.slot(&name) else { return not_found("no such pipeline") };
    match slot.live(&run_id) {
        Some(live) => {
            let (view, rx) = live.subscribe();
            Sse::new(live_stream(sync_event(&view), rx)).keep_alive(KeepAlive::default()).into_response()
        }
        None => {
            let Some((view, _)) = find_run(&server, slot, &run_id) else { return not_found("no such run") };
            let once = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                SseEvent::default().data(sync_event(&view)),
            )]);
            Sse::new(once).into_response()
        }
    }
}

/// The statuses now, as the first event of a stream.
pub fn sync_event(view: &RunView) -> String {
    let nodes: serde_json::Map<String, serde_json::Value> = view
        .nodes
        .iter()
        .map(|n| (n.id.clone(), serde_json::json!({"status": n.status, "attempt": n.attempt})))
        .collect();
    serde_json::json!({"event": "sync", "run_id": view.run_id, "status": view.status, "nodes": nodes}).to_string()
}

fn live_stream(
    first: String,
    rx: tokio::sync::broadcast::Receiver<Arc<str>>,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    use tokio::sync::broadcast::error::RecvError;
    let first = futures_util::stream::iter([Ok(SseEvent::default().data(first))]);
    let rest = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Ok(json) => {
                let ended =
                    json.contains("\"event\":\"run_finished\"") || json.contains("\"event\":\"run_not_started\"");
                Some((Ok(SseEvent::default().data(&*json)), (rx, ended)))
            }
            Err(RecvError::Lagged(_)) => Some((Ok(SseEvent::default().data(r#"{"event":"resync"}"#)), (rx, true))),
            Err(RecvError::Closed) => None,
        }
    });
    futures_util::StreamExt::chain(first, rest)
}

// -------------------------------------------------------------------------------------------------------------
// Actions
// -------------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    decision: Option<String>,
}

fn refused(refusal: Refusal, here: &str) -> Response {
    match refusal {
        Refusal::Unauthenticated => Redirect::to(&format!("/login?next={}", urlencoding::encode(here))).into_response(),
        Refusal::Forgery => message_page(
            StatusCode::FORBIDDEN,
            "refused",
            "the form's CSRF token is missing or not this session's: reload the page and try again",
        ),
    }
}

async fn trigger_form(
    State(server): State<Arc<Server>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let here = pipeline_link(&name);
    let actor = match server.auth.authorize(&headers, form.csrf.as_deref()) {
        Ok(a) => a,
        Err(r) => return refused(r, &here),
    };
    let Some(slot) = server.slot(&name) else { return not_found("no such pipeline") };
    match super::queue::trigger_now(&server, slot, actor.describe()).await {
        Ok(Offer::Queued { .. } | Offer::Unchanged) => Redirect::to(&here).into_response(),
        Err(e) => message_page(StatusCode::BAD_GATEWAY, "cannot run now", &e),
    }
}

async fn approval_form(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id, node)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let here = run_link(&name, &run_id);
    let actor = match server.auth.authorize(&headers, form.csrf.as_deref()) {
        Ok(a) => a,
        Err(r) => return refused(r, &here),
    };
    let approved = match form.decision.as_deref() {
        Some("approve") => true,
        Some("reject") => false,
        _ => return message_page(StatusCode::BAD_REQUEST, "bad request", "say approve or reject"),
    };
    match answer(&server, &name, &run_id, &node, approved, &actor) {
        Ok(()) => Redirect::to(&here).into_response(),
        Err((status, e)) => message_page(status, "cannot answer", &e),
    }
}

/// Answer a waiting Approval of a live run (the page's and the API's way).
pub fn answer(
    server: &Server,
    pipeline: &str,
    run_id: &str,
    node: &str,
    approved: bool,
    actor: &Actor,
) -> Result<(), (StatusCode, String)> {
    let slot = server.slot(pipeline).ok_or((StatusCode::NOT_FOUND, "no such pipeline".to_string()))?;
    let live = slot.live(run_id).ok_or((StatusCode::CONFLICT, format!("run {run_id} is not in progress")))?;
    live.answer(node, approved, actor.describe()).map_err(|e| (StatusCode::CONFLICT, e))?;
    eprintln!(
        "{pipeline}: `{node}` of run {run_id} {} from {}",
        if approved { "approved" } else { "rejected" },
        actor.describe()
    );
    Ok(())
}

async fn cancel_form(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id)): UrlPath<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let here = run_link(&name, &run_id);
    if let Err(r) = server.auth.authorize(&headers, form.csrf.as_deref()) {
        return refused(r, &here);
    }
    match cancel(&server, &name, &run_id) {
        Ok(_) => Redirect::to(&here).into_response(),
        Err((status, e)) => message_page(status, "cannot cancel", &e),
    }
}

/// Stop a live run: the first time as Ctrl-C (running steps get SIGTERM), again to kill them.
pub fn cancel(server: &Server, pipeline: &str, run_id: &str) -> Result<&'static str, (StatusCode, String)> {
    let slot = server.slot(pipeline).ok_or((StatusCode::NOT_FOUND, "no such pipeline".to_string()))?;
    let live = slot.live(run_id).ok_or((StatusCode::CONFLICT, format!("run {run_id} is not in progress")))?;
    let reason = live.cancel();
    eprintln!("{pipeline}: run {run_id} cancelled ({reason:?})");
    Ok(match reason {
        engine::step::StopReason::Interrupt => "interrupt",
        _ => "kill",
    })
}

// -------------------------------------------------------------------------------------------------------------
// Login
// -------------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct NextPage {
    next: Option<String>,
}

/// Only a path of this site (never `//host`, never a URL).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

async fn login_page(State(server): State<Arc<Server>>, Query(next): Query<NextPage>, headers: HeaderMap) -> Response {
    let next = safe_next(next.next.as_deref());
    let visitor = visitor(&server, &headers);
    let body = html! {
        h1 { "log in" }
        p { "Acting (running a pipeline now, approving, rejecting, cancelling) needs the server's token: the one given with "
            code { "--token" } ", or the one in " code { ".runner/serve/token" } " when none was given." }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label { "token " input type="password" name="token" autocomplete="current-password" required; }
            " "
            button type="submit" { "log in" }
        }
    };
    layout("log in", &visitor, &next, body)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(State(server): State<Arc<Server>>, Form(form): Form<LoginForm>) -> Response {
    if !server.auth.check_token(&form.token) {
        return message_page(StatusCode::UNAUTHORIZED, "wrong token", "that is not the server's token");
    }
    let cookie = server.auth.login();
    let mut response = Redirect::to(&safe_next(form.next.as_deref())).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout(State(server): State<Arc<Server>>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    if let Err(r) = server.auth.authorize(&headers, form.csrf.as_deref()) {
        return refused(r, "/");
    }
    let cookie = server.auth.logout(&headers);
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("static/app.js")).into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("static/style.css")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_login() {
        assert_eq!(safe_next(Some("/pipelines/dev")), "/pipelines/dev");
        assert_eq!(safe_next(Some("//evil.example/x")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..500).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join("build.log"), text).unwrap();
        let tail = log_tail(dir.path(), "build", 3);
        assert_eq!(tail, vec!["line 497", "line 498", "line 499"]);
        assert!(log_tail(dir.path(), "missing", 3).is_empty());
    }
}
