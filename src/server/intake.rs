//! `POST /webhook`: verify the signature over the raw body, check the payload parses, record
//! the delivery durably (deduplicated by `X-GitHub-Delivery`), answer 202 at once. Processing
//! happens afterwards, from the recorded queue.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engine::Engine;
use crate::github::{parse_event, verify_signature, WebhookEvent};
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

pub async fn webhook(State(engine): State<Engine>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = header(&headers, "x-hub-signature-256");
    if verify_signature(&engine.config().webhook_secrets, &body, signature).is_err() {
        tracing::warn!("webhook refused: missing or bad signature");
        return answer(
            StatusCode::UNAUTHORIZED,
            "missing or bad X-Hub-Signature-256",
        );
    }
    let Some(event) = header(&headers, "x-github-event") else {
        return answer(StatusCode::BAD_REQUEST, "missing X-GitHub-Event");
    };
    let Some(guid) =
        header(&headers, "x-github-delivery").filter(|g| !g.is_empty() && g.len() <= 100)
    else {
        return answer(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery");
    };
    let parsed = match parse_event(event, &body) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return answer(StatusCode::ACCEPTED, "ignored: event not handled"),
        Err(e) => {
            tracing::warn!(guid, event, error = %e, "webhook refused: malformed payload");
            return answer(
                StatusCode::BAD_REQUEST,
                &format!("malformed {event} payload: {e}"),
            );
        }
    };
    let (action, installation_id) = describe(&parsed);
    let recorded = engine
        .store()
        .record_delivery(&NewDelivery {
            guid,
            event,
            action,
            installation_id: installation_id.map(|i| i.0),
            payload: &body,
        })
        .await;
    match recorded {
        Ok(true) => {
            engine.delivery_recorded();
            answer(StatusCode::ACCEPTED, "accepted")
        }
        Ok(false) => answer(StatusCode::ACCEPTED, "duplicate delivery: already recorded"),
        Err(e) => {
            // Not recorded: a 5xx makes it a failed delivery, which can be redelivered.
            tracing::error!(guid, error = %e, "cannot record delivery");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record the delivery",
            )
        }
    }
}
