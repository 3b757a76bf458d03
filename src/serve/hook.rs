//! `POST /hooks/github`: GitHub's push webhook. The delivery's `X-Hub-Signature-256` must be the HMAC-SHA256 of
//! the raw body under the server's webhook secret, compared in constant time (GitHub's "Validating webhook
//! deliveries"); otherwise 401 and nothing runs. A `ping` gets 200; a push to a branch some pipeline follows queues
//! a run of the pushed commit (202, naming the pipelines); any other push or event gets 202 and does nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{KeyInit, Mac};
use serde_json::json;

use super::queue::Offer;
use super::trigger::{following, push_trigger, Push};
use super::Server;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`; compared in constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.trim().strip_prefix("sha256=") else { return false };
    let Ok(given) = hex::decode(hex_digest) else { return false };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// `sha256=<hex>` of `body` under `secret`: what GitHub sends.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

pub async fn github(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &server.webhook_secret else {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "this server takes no webhooks: start it with --webhook-secret"}),
        );
    };
    let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !signature_valid(secret, &body, signature) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or wrong X-Hub-Signature-256: nothing runs"}),
        );
    }
    let event = headers.get("x-github-event").and_then(|v| v.to_str().ok()).unwrap_or("");
    let delivery = headers.get("x-github-delivery").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    match event {
        "ping" => answer(StatusCode::OK, json!({"pong": true})),
        "push" => {
            let push: Push = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("not a push event's payload: {e}")}),
                    )
                }
            };
            if push.deleted || push.after.chars().all(|c| c == '0') {
                return answer(StatusCode::ACCEPTED, json!({"triggered": [], "reason": "the ref was deleted"}));
            }
            if git2::Oid::from_str(&push.after).is_err() {
                return answer(StatusCode::BAD_REQUEST, json!({"error": "`after` is not a commit id"}));
            }
            let mut triggered = Vec::new();
            for slot in &server.pipelines {
                let sources = following(&slot.model(), &server.base_dir, &push);
                if sources.is_empty() {
                    continue;
                }
                let trigger = push_trigger(&sources, &push, &delivery);
                if let Offer::Queued { .. } = slot.offer(trigger.clone(), false) {
                    eprintln!(
                        "{}: pushed {} to {}: queued a run",
                        slot.name,
                        trigger.short_commit(),
                        push.reference.trim_start_matches("refs/heads/")
                    );
                }
                triggered.push(slot.name.clone());
            }
            let reason = if triggered.is_empty() {
                Some(format!("no pipeline follows {} of this repository", push.reference))
            } else {
                None
            };
            answer(StatusCode::ACCEPTED, json!({"triggered": triggered, "reason": reason}))
        }
        "" => answer(StatusCode::BAD_REQUEST, json!({"error": "no X-GitHub-Event header"})),
        other => {
            answer(StatusCode::ACCEPTED, json!({"triggered": [], "reason": format!("`{other}` events start nothing")}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_example_signature_is_valid() {
        // From GitHub's "Validating webhook deliveries": secret "It's a Secret to Everybody", payload "Hello, World!".
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(b"It's a Secret to Everybody", b"Hello, World!"), expected);
        assert!(signature_valid(b"It's a Secret to Everybody", b"Hello, World!", expected));
    }

    #[test]
    fn wrong_or_malformed_signatures_are_refused() {
        let good = sign(b"k", b"body");
        assert!(!signature_valid(b"other", b"body", &good));
        assert!(!signature_valid(b"k", b"body!", &good));
        assert!(!signature_valid(b"k", b"body", good.trim_start_matches("sha256=")));
        assert!(!signature_valid(b"k", b"body", "sha256=zz"));
        assert!(!signature_valid(b"k", b"body", ""));
    }
}
