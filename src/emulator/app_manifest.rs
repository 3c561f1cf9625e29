//! GitHub's App-manifest flow: the "new App" page of an organization
//! (`GET|POST /organizations/{org}/settings/apps/new`, form fields `manifest` and `state`) and
//! the code exchange (`POST /app-manifests/{code}/conversions`).
//!
//! The page validates the manifest, records a pending App under a fresh code and redirects (302)
//! to the manifest's `redirect_url` with `code` and `state`, as GitHub does once a person
//! confirms (the emulator confirms for them). Codes are single-use and expire after one hour.
//!
//! The conversion answers with **the emulator's own App** (its id, private key and webhook
//! secret) rather than minting a new one: the emulator plays exactly one App, so a hub started
//! from the converted credentials is accepted by the emulator's API and receives its webhooks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, RawForm, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use url::Url;

use super::http::{ApiError, ApiResult};
use super::json;
use super::server::Shared;

/// How long a manifest code may be exchanged.
pub const CODE_LIFETIME: Duration = Duration::from_secs(3600);

/// A manifest accepted by the new-App page, waiting for its conversion.
#[derive(Debug, Clone)]
struct PendingApp {
    created: Instant,
}

/// The codes handed out by the new-App page and not exchanged yet.
#[derive(Debug, Default)]
pub struct PendingApps {
    codes: Mutex<HashMap<String, PendingApp>>,
}

impl PendingApps {
    /// Records a pending App created at `now`; returns its code.
    fn issue(&self, now: Instant) -> String {
        let code = hex::encode(rand::random::<[u8; 10]>());
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes.retain(|_, p| now.duration_since(p.created) < CODE_LIFETIME);
        codes.insert(code.clone(), PendingApp { created: now });
        code
    }

    /// Takes a code at `now`: true once for a code issued less than an hour before.
    fn redeem(&self, code: &str, now: Instant) -> bool {
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes
            .remove(code)
            .is_some_and(|p| now.saturating_duration_since(p.created) < CODE_LIFETIME)
    }
}

/// Why a manifest was refused (shown on the page, like GitHub's form errors).
fn check_manifest(text: &str) -> Result<Url, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let m = v.as_object().ok_or("the manifest must be a JSON object")?;
    const KNOWN: &[&str] = &[
        "name",
        "url",
        "hook_attributes",
        "redirect_url",
        "callback_urls",
        "setup_url",
        "description",
        "public",
        "default_events",
        "default_permissions",
        "request_oauth_on_install",
        "setup_on_update",
    ];
    if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unknown manifest key {k:?}"));
    }
    let http_url = |key: &str, v: Option<&Value>| -> Result<Url, String> {
        let s = v
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{key} is required and must be a string"))?;
        Url::parse(s)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| format!("{key} must be an http(s) URL, got {s:?}"))
    };
    http_url("url", m.get("url"))?;
    let hook = m
        .get("hook_attributes")
        .and_then(Value::as_object)
        .ok_or("hook_attributes is required and must be an object")?;
    http_url("hook_attributes.url", hook.get("url"))?;
    if hook.get("active").is_some_and(|a| !a.is_boolean()) {
        return Err("hook_attributes.active must be a boolean".into());
    }
    if m.get("name").is_some_and(|n| !n.is_string()) {
        return Err("name must be a string".into());
    }
    if m.get("public").is_some_and(|p| !p.is_boolean()) {
        return Err("public must be a boolean".into());
    }
    if let Some(ev) = m.get("default_events") {
        let ok = ev
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err("default_events must be an array of event names".into());
        }
    }
    if let Some(p) = m.get("default_permissions") {
        let ok = p.as_object().is_some_and(|o| {
            o.values()
                .all(|v| matches!(v.as_str(), Some("read" | "write" | "admin")))
        });
        if !ok {
            return Err(
                "default_permissions must map permission names to read, write or admin".into(),
            );
        }
    }
    // Without a redirect URL GitHub shows the credentials to the person; the emulator has no one
    // to show them to.
    http_url("redirect_url", m.get("redirect_url"))
}

fn page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><title>Create GitHub App</title><h1>Create GitHub App</h1><p>{}</p>",
        message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET|POST /organizations/{org}/settings/apps/new`: fields `manifest` and `state`, from the
/// query string or an `application/x-www-form-urlencoded` body (the body wins).
pub async fn new_app(
    State(sh): State<Arc<Shared>>,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    RawForm(body): RawForm,
) -> Response {
    if !org.eq_ignore_ascii_case(&sh.ctx.org) {
        return page(StatusCode::NOT_FOUND, "No such organization.");
    }
    let mut fields = query;
    fields.extend(url::form_urlencoded::parse(&body).into_owned());
    let Some(manifest) = fields.get("manifest") else {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No manifest: post the form field `manifest` (the App's manifest, JSON).",
        );
    };
    let mut redirect = match check_manifest(manifest) {
        Ok(u) => u,
        Err(why) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Invalid GitHub App manifest: {why}."),
            )
        }
    };
    // The App exists once the person creates it: its callback URLs are registered.
    if let Ok(v) = serde_json::from_str::<Value>(manifest) {
        let urls = v["callback_urls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().and_then(|u| url::Url::parse(u).ok()));
        sh.oauth.register_callbacks(urls);
    }
    let code = sh.manifests.issue(Instant::now());
    {
        let mut q = redirect.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(state) = fields.get("state") {
            q.append_pair("state", state);
        }
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

/// `POST /app-manifests/{code}/conversions` (no authentication): 201 with the App and its
/// credentials, once per code, within an hour of the redirect; 404 otherwise.
pub async fn conversion(State(sh): State<Arc<Shared>>, Path(code): Path<String>) -> ApiResult {
    if !sh.manifests.redeem(&code, Instant::now()) {
        return Err(ApiError::not_found());
    }
    let mut v = json::app(&sh.ctx);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("client_id".into(), json!(sh.oauth.client_id));
        obj.insert("client_secret".into(), json!(sh.oauth.client_secret()));
        obj.insert(
            "webhook_secret".into(),
            json!(sh.webhook_secret.expose_secret()),
        );
        obj.insert("pem".into(), json!(sh.private_key_pem.expose_secret()));
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"name":"x","url":"https://h.example","hook_attributes":{"url":"https://h.example/webhook"},"redirect_url":"http://127.0.0.1:9/callback","public":false,"default_events":["workflow_run"],"default_permissions":{"checks":"write"}}"#;

    #[test]
    fn codes_are_single_use_and_expire() {
        let p = PendingApps::default();
        let t0 = Instant::now();
        let a = p.issue(t0);
        assert!(p.redeem(&a, t0 + Duration::from_secs(5)));
        assert!(!p.redeem(&a, t0 + Duration::from_secs(6)), "second use");
        let b = p.issue(t0);
        assert!(!p.redeem(&b, t0 + CODE_LIFETIME), "expired");
        assert!(!p.redeem("nope", t0));
    }

    #[test]
    fn manifests_are_checked() {
        assert_eq!(
            check_manifest(GOOD).unwrap().as_str(),
            "http://127.0.0.1:9/callback"
        );
        let bad = |s: &str| check_manifest(s).unwrap_err();
        assert!(bad("{").contains("not JSON"));
        assert!(bad("[]").contains("object"));
        assert!(bad(&GOOD.replace("\"url\":\"https://h.example\",", "")).contains("url"));
        assert!(bad(&GOOD.replace("https://h.example/webhook", "ftp://x"))
            .contains("hook_attributes.url"));
        assert!(bad(&GOOD.replace("\"write\"", "\"all\"")).contains("default_permissions"));
        assert!(bad(&GOOD.replace("\"public\"", "\"publik\"")).contains("publik"));
        assert!(
            bad(&GOOD.replace(",\"redirect_url\":\"http://127.0.0.1:9/callback\"", ""))
                .contains("redirect_url")
        );
    }
}
