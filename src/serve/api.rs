//! The JSON API under `/api`: what the pages show, as JSON (documented in README). Acting needs the bearer token
//! (a session cookie alone is refused: the API has no CSRF token to check).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::queue::Offer;
use super::web::{self, find_run, history, summarize, HISTORY_PAGE};
use super::Server;

pub fn reads() -> Router<Arc<Server>> {
    Router::new()
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{pipeline}", get(pipeline))
        .route("/api/pipelines/{pipeline}/runs", get(runs))
        .route("/api/pipelines/{pipeline}/runs/{run}", get(run))
        .route("/api/pipelines/{pipeline}/runs/{run}/events", get(events))
        .route("/api/pipelines/{pipeline}/runs/{run}/logs/{*node}", get(log))
}

pub fn acts() -> Router<Arc<Server>> {
    Router::new()
        .route("/api/pipelines/{pipeline}/trigger", post(trigger))
        .route("/api/pipelines/{pipeline}/runs/{run}/approvals/{*node}", post(approval))
        .route("/api/pipelines/{pipeline}/runs/{run}/cancel", post(cancel))
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"error": text}))).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "acting needs the server's token: Authorization: Bearer <token>")
}

async fn pipelines(State(server): State<Arc<Server>>) -> Response {
    let list: Vec<_> = server.pipelines.iter().map(|s| summarize(&server, s)).collect();
    Json(json!({ "pipelines": list })).into_response()
}

async fn pipeline(State(server): State<Arc<Server>>, UrlPath(name): UrlPath<String>) -> Response {
    let Some(slot) = server.slot(&name) else { return error(StatusCode::NOT_FOUND, "no such pipeline") };
    let superseded = slot.state().record.superseded.clone();
    Json(json!({ "pipeline": summarize(&server, slot), "superseded": superseded })).into_response()
}

#[derive(Deserialize)]
struct RunsQuery {
    before: Option<String>,
    limit: Option<usize>,
}

async fn runs(
    State(server): State<Arc<Server>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RunsQuery>,
) -> Response {
    let Some(slot) = server.slot(&name) else { return error(StatusCode::NOT_FOUND, "no such pipeline") };
    let limit = q.limit.unwrap_or(HISTORY_PAGE).clamp(1, 500);
    let (runs, next) = history(&server, slot, q.before.as_deref(), limit);
    Json(json!({ "runs": runs, "next_before": next })).into_response()
}

async fn run(State(server): State<Arc<Server>>, UrlPath((name, run_id)): UrlPath<(String, String)>) -> Response {
    let Some(slot) = server.slot(&name) else { return error(StatusCode::NOT_FOUND, "no such pipeline") };
    let Some((view, _)) = find_run(&server, slot, &run_id) else { return error(StatusCode::NOT_FOUND, "no such run") };
    let critical_path = view.critical_path();
    let mut value = serde_json::to_value(&view).unwrap_or_default();
    value["critical_path"] = json!(critical_path);
    Json(value).into_response()
}

/// A live run: `sync`, then its events as they come. A past run: its recorded events (as `runner run --output
/// json` printed them), then the stream ends.
async fn events(State(server): State<Arc<Server>>, UrlPath((name, run_id)): UrlPath<(String, String)>) -> Response {
    let Some(slot) = server.slot(&name) else { return error(StatusCode::NOT_FOUND, "no such pipeline") };
    if slot.live(&run_id).is_some() {
        return web::run_events(State(Arc::clone(&server)), UrlPath((name, run_id))).await;
    }
    if find_run(&server, slot, &run_id).is_none() {
        return error(StatusCode::NOT_FOUND, "no such run");
    }
    let path = server.dir().join("runs").join(format!("{run_id}.events.jsonl"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<Result<SseEvent, std::convert::Infallible>> =
        text.lines().filter(|l| !l.is_empty()).map(|l| Ok(SseEvent::default().data(l))).collect();
    Sse::new(futures_util::stream::iter(lines)).into_response()
}

async fn log(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id, node)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(slot) = server.slot(&name) else { return error(StatusCode::NOT_FOUND, "no such pipeline") };
    let Some((view, dir)) = find_run(&server, slot, &run_id) else {
        return error(StatusCode::NOT_FOUND, "no such run");
    };
    if view.node(&node).is_none() {
        return error(StatusCode::NOT_FOUND, "no such step in this run");
    }
    let mut path = dir.join(engine::walk::node_file_stem(&node));
    path.set_extension("log");
    let text = std::fs::read(&path).unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn trigger(State(server): State<Arc<Server>>, UrlPath(name): UrlPath<String>, headers: HeaderMap) -> Response {
    if !server.auth.bearer(&headers) {
        return unauthorized();
    }
    let Some(slot) = server.slot(&name) else { return error(StatusCode::NOT_FOUND, "no such pipeline") };
    match super::queue::trigger_now(&server, slot, "the API").await {
        Ok(Offer::Queued { superseded }) => {
            (StatusCode::ACCEPTED, Json(json!({"queued": true, "superseded": superseded.map(|t| t.commits)})))
                .into_response()
        }
        Ok(Offer::Unchanged) => (StatusCode::ACCEPTED, Json(json!({"queued": false}))).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e),
    }
}

#[derive(Deserialize)]
struct Decision {
    approve: bool,
}

async fn approval(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id, node)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    body: Option<Json<Decision>>,
) -> Response {
    if !server.auth.bearer(&headers) {
        return unauthorized();
    }
    let Some(Json(decision)) = body else {
        return error(StatusCode::BAD_REQUEST, r#"send {"approve": true} or {"approve": false}"#);
    };
    match web::answer(&server, &name, &run_id, &node, decision.approve, &super::auth::Actor::Bearer) {
        Ok(()) => Json(json!({"answered": node, "approved": decision.approve})).into_response(),
        Err((status, e)) => error(status, &e),
    }
}

async fn cancel(
    State(server): State<Arc<Server>>,
    UrlPath((name, run_id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !server.auth.bearer(&headers) {
        return unauthorized();
    }
    match web::cancel(&server, &name, &run_id) {
        Ok(stop) => (StatusCode::ACCEPTED, Json(json!({"stop": stop}))).into_response(),
        Err((status, e)) => error(status, &e),
    }
}
