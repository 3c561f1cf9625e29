//! `POST /webhook`: check the headers, read the body within its budget and deadline, verify the
//! signature over the raw bytes, check the payload parses, record the delivery durably
//! (deduplicated by `X-GitHub-Delivery`), answer 202 at once. Processing happens afterwards,
//! from the recorded queue.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::body::{BodyBudget, BodyError};
use crate::engine::Engine;
use crate::github::{
    parse_event, signature_digest, verify_signature, SignatureError, WebhookEvent,
};
use crate::hub::InstallationId;
use crate::store::NewDelivery;

fn answer(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// The action and installation of an event, recorded beside the delivery.
fn describe(e: &WebhookEvent) -> (Option<&str>, Option<InstallationId>) {
    match e {
        WebhookEvent::WorkflowDispatch(e) => (None, e.installation_id),
        WebhookEvent::RepositoryDispatch(e) => (Some(e.action.as_str()), e.installation_id),
        WebhookEvent::WorkflowRun(e) => (Some(e.action.as_str()), e.installation_id),
        WebhookEvent::CheckRun(e) => (Some(e.action.as_str()), e.installation_id),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The declared `Content-Length`; `Err` when it is there but not a number.
fn content_length(headers: &HeaderMap) -> Result<Option<usize>, ()> {
    match headers.get(axum::http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
            .ok_or(()),
    }
}

/// At most the first 100 characters (header values are ASCII).
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn signature_refusal(e: &SignatureError) -> Response {
    let status = match e {
        SignatureError::Malformed => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    };
    answer(status, &e.to_string())
}

pub async fn webhook(
    State(engine): State<Engine>,
    Extension(budget): Extension<BodyBudget>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    // Logged before they are validated: at most 100 characters of each.
    let event = shorten(header(headers, "x-github-event").unwrap_or(""));
    let guid = shorten(header(headers, "x-github-delivery").unwrap_or(""));
    // Everything that can be judged from the head is judged before a byte of the body is read.
    let signature = header(headers, "x-hub-signature-256");
    let t = engine.telemetry();
    if let Err(e) = signature_digest(signature) {
        tracing::warn!(event, guid, "webhook refused: {e}");
        t.delivery(event, "bad_signature");
        return signature_refusal(&e);
    }
    if event.is_empty() {
        return answer(StatusCode::BAD_REQUEST, "missing X-GitHub-Event");
    }
    if guid.is_empty() || header(headers, "x-github-delivery").is_some_and(|g| g.len() > 100) {
        return answer(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery");
    }
    let Ok(declared) = content_length(headers) else {
        return answer(StatusCode::BAD_REQUEST, "malformed Content-Length");
    };
    if let Err(e) = engine.store().check_writable() {
        tracing::error!(guid, error = %e, "delivery refused: the database is not usable");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot record the delivery",
        );
    }
    let (body, _room) = match budget.read(Body::new(body), declared).await {
        Ok(read) => read,
        Err(e) => {
            t.delivery(
                event,
                match e {
                    BodyError::TooLarge => "too_large",
                    BodyError::TooSlow | BodyError::Busy => "refused",
                    BodyError::Broken(_) => "malformed",
                },
            );
            let status = match e {
                BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::TooSlow => StatusCode::REQUEST_TIMEOUT,
                BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                BodyError::Broken(_) => StatusCode::BAD_REQUEST,
            };
            tracing::warn!(event, guid, "webhook refused: {e}");
            return answer(status, &e.to_string());
        }
    };
    if let Err(e) = verify_signature(&engine.config().webhook_secrets, &body, signature) {
        tracing::warn!(
            event,
            guid,
            "webhook refused: {e} (is SPOKEHUB_WEBHOOK_SECRET the App's webhook secret?)"
        );
        t.delivery(event, "bad_signature");
        return signature_refusal(&e);
    }
    let parsed = match parse_event(event, &body) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            t.delivery(event, "ignored");
            return answer(StatusCode::ACCEPTED, "ignored: event not handled");
        }
        Err(e) => {
            tracing::warn!(guid, event, error = %e, "webhook refused: malformed payload");
            t.delivery(event, "malformed");
            return answer(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let (action, installation_id) = describe(&parsed);
    let action = action.map(str::to_owned);
    // The parsed copy is not needed any more: a large payload is held once, not twice.
    drop(parsed);
    let recorded = engine
        .store()
        .record_delivery(&NewDelivery {
            guid,
            event,
            action: action.as_deref(),
            installation_id: installation_id.map(|i| i.0),
            payload: body,
        })
        .await;
    // Written to a file that was removed or replaced under the hub: not on disk where the
    // next start will look, so not acknowledged.
    let recorded = recorded.and_then(|new| {
        engine.store().check_writable()?;
        Ok(new)
    });
    match recorded {
        Ok(true) => {
            engine.delivery_recorded();
            t.delivery(event, "accepted");
            answer(StatusCode::ACCEPTED, "accepted")
        }
        Ok(false) => {
            t.delivery(event, "duplicate");
            answer(StatusCode::ACCEPTED, "duplicate delivery: already recorded")
        }
        Err(e) => {
            // Not recorded: a 5xx makes it a failed delivery, which can be redelivered.
            tracing::error!(guid, error = %e, "cannot record delivery");
            t.delivery(event, "refused");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record the delivery",
            )
        }
    }
}
