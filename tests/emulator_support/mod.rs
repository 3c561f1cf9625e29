//! Shared helpers for the emulator tests: start an emulator with a webhook receiver, validate
//! against the OpenAPI subset and the webhook schemas, poll for conditions.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{json, Map, Value};
use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};
use tokio::sync::Notify;

/// One captured webhook delivery.
#[derive(Debug, Clone)]
pub struct Hook {
    pub event: String,
    pub delivery: String,
    pub signature: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

/// Webhooks received by the test's receiver.
#[derive(Clone, Default)]
pub struct Hooks {
    pub list: Arc<Mutex<Vec<Hook>>>,
    notify: Arc<Notify>,
}

impl Hooks {
    pub fn all(&self) -> Vec<Hook> {
        self.list.lock().unwrap().clone()
    }
    /// Waits until `pred` holds for the received list (10 s deadline).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Hook]) -> bool) -> Vec<Hook> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.notify.notified();
            {
                let l = self.list.lock().unwrap();
                if pred(&l) {
                    return l.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let l = self.list.lock().unwrap();
                let seen: Vec<String> = l
                    .iter()
                    .map(|h| format!("{}/{}", h.event, h.json["action"]))
                    .collect();
                panic!("timed out waiting for {what}; received {seen:?}");
            }
        }
    }
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<repo>/../shared/fixtures`, or `$SPOKEHUB_SHARED_DIR/fixtures` when the checkout lives elsewhere.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("SPOKEHUB_SHARED_DIR") {
        Some(d) => PathBuf::from(d).join("fixtures"),
        None => manifest_dir().join("../shared/fixtures"),
    }
}

/// The default scenario with the committed test key (no slow key generation).
pub fn scenario(toml_extra: &str) -> Scenario {
    let key = manifest_dir().join("tests/data/test-app-key.pem");
    let text = format!(
        "[app]\nprivate_key_file = {:?}\nwebhook_secret = \"test-secret\"\n{toml_extra}",
        key.display().to_string()
    );
    Scenario::from_toml(&text).expect("scenario")
}

/// A started emulator plus its webhook receiver.
pub struct Env {
    pub emu: EmulatorHandle,
    pub hooks: Hooks,
    pub http: reqwest::Client,
}

/// Starts a receiver answering `status` and an emulator delivering to it.
pub async fn start_with_status(sc: Scenario, status: u16) -> Env {
    let hooks = Hooks::default();
    let h2 = hooks.clone();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let h = h2.clone();
            async move {
                let get = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let hook = Hook {
                    event: get("x-github-event"),
                    delivery: get("x-github-delivery"),
                    signature: get("x-hub-signature-256"),
                    json: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    headers: headers.clone(),
                    body,
                };
                h.list.lock().unwrap().push(hook);
                h.notify.notify_waiters();
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let rl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", rl.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(rl, app).await.unwrap();
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emu = Emulator::start(l, sc, url, None).await.expect("start");
    Env {
        emu,
        hooks,
        http: reqwest::Client::new(),
    }
}

pub async fn start(sc: Scenario) -> Env {
    start_with_status(sc, 200).await
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url)
    }

    /// An App JWT signed with the emulator's key.
    pub fn jwt(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iat": now - 60, "exp": now + 540, "iss": self.emu.app_id});
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(self.emu.private_key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    }

    /// Mints an installation token with a raw request.
    pub async fn token(&self) -> String {
        let r = self
            .http
            .post(self.url(&format!(
                "/app/installations/{}/access_tokens",
                self.emu.installation_id
            )))
            .bearer_auth(self.jwt())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(self.url("/_emulator/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn summary(&self) -> Value {
        self.http
            .get(self.url("/_emulator/state?summary=1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the state until `pred` holds (10 s deadline).
    pub async fn wait_state(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A standard spoke dispatch body.
    pub fn spoke_inputs(hub_run_id: &str, attempt: u32) -> Value {
        json!({"hub_run_id": hub_run_id, "attempt": attempt.to_string(), "task": "bump",
               "params": "{}", "callback_token": format!("cb-{hub_run_id}-{attempt}")})
    }
}

/// Converts OpenAPI 3.0 `nullable: true` into JSON-Schema type unions, recursively.
fn denull(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(denull).collect()),
        Value::Object(m) => {
            let mut out: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| *k != "nullable" && *k != "discriminator")
                .map(|(k, v)| {
                    // Property maps hold names, not schemas with keywords: recurse into values.
                    (k.clone(), denull(v))
                })
                .collect();
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                    if let Some(Value::Array(e)) = out.get_mut("enum") {
                        e.push(Value::Null);
                    }
                } else {
                    return json!({"anyOf": [Value::Object(out), {"type": "null"}]});
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Validates REST responses against the OpenAPI subset.
pub struct OpenApi {
    doc: Value,
    components: Value,
}

impl OpenApi {
    pub fn load() -> OpenApi {
        let text = std::fs::read_to_string(fixtures().join("github-openapi-subset.json"))
            .expect("openapi subset");
        let doc: Value = serde_json::from_str(&text).unwrap();
        let components = denull(&doc["components"]);
        OpenApi { doc, components }
    }

    /// Panics with the errors when `body` does not match the operation's response schema.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "no operation {method} {path} in the subset");
        self.check_op(op, method, path, status, body);
    }

    /// [`check`](Self::check) against the operation as API version `version` describes it:
    /// the `x-github-breaking-changes` patches of every version up to it applied.
    pub fn check_version(
        &self,
        version: &str,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) {
        let mut op = self.doc["paths"][path][method.to_lowercase()].clone();
        assert!(op.is_object(), "no operation {method} {path} in the subset");
        let changes = op["x-github-breaking-changes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for change in changes {
            if change["version"].as_str().is_some_and(|v| v <= version) {
                for patch in change["patch"].as_array().unwrap() {
                    apply_patch(&mut op, patch);
                }
            }
        }
        self.check_op(&op, method, path, status, body);
    }

    /// Panics with the errors when `body` does not match components schema `name`.
    pub fn check_schema(&self, name: &str, body: &Value) {
        let mut s = json!({"$ref": format!("#/components/schemas/{name}")});
        s["components"] = self.components.clone();
        let v = jsonschema::validator_for(&s).expect("schema compiles");
        let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}\nbody: {body}");
    }

    fn check_op(&self, op: &Value, method: &str, path: &str, status: u16, body: &Value) {
        let resp = &op["responses"][status.to_string()];
        assert!(
            resp.is_object(),
            "{method} {path}: status {status} not documented"
        );
        let schema = &resp["content"]["application/json"]["schema"];
        if schema.is_null() {
            return;
        }
        let mut s = denull(schema);
        if let Value::Object(m) = &mut s {
            m.insert("components".into(), self.components.clone());
        } else {
            panic!("schema is not an object");
        }
        let v = jsonschema::validator_for(&s).expect("schema compiles");
        let errors: Vec<String> = v
            .iter_errors(body)
            .take(10)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: {errors:#?}\nbody: {}",
            serde_json::to_string(body)
                .unwrap()
                .chars()
                .take(2000)
                .collect::<String>()
        );
    }
}

/// Applies one JSON-patch operation (`remove` or `replace`, as GitHub's breaking changes use).
fn apply_patch(doc: &mut Value, patch: &Value) {
    let path = patch["path"].as_str().unwrap();
    let mut keys: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|k| k.replace("~1", "/").replace("~0", "~"))
        .collect();
    let last = keys.pop().unwrap();
    let mut at = doc;
    for k in &keys {
        at = at
            .get_mut(k.as_str())
            .unwrap_or_else(|| panic!("patch path {path}"));
    }
    let obj = at.as_object_mut().unwrap();
    match patch["op"].as_str().unwrap() {
        "remove" => {
            obj.remove(&last)
                .unwrap_or_else(|| panic!("patch path {path}"));
        }
        "replace" | "add" => {
            obj.insert(last, patch["value"].clone());
        }
        other => panic!("unsupported patch op {other}"),
    }
}

fn uri_template(s: &str) -> bool {
    let mut open = false;
    for c in s.chars() {
        match c {
            '{' if !open => open = true,
            '}' if open => open = false,
            '{' | '}' => return false,
            c if c.is_whitespace() => return false,
            _ => {}
        }
    }
    !open && url::Url::parse(&s.replace(['{', '}'], "")).is_ok()
}

fn inline_refs(v: &Value, dir: &std::path::Path) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(|x| inline_refs(x, dir)).collect()),
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                if !r.starts_with('#') {
                    let p = dir.join(r);
                    let text = std::fs::read_to_string(&p)
                        .unwrap_or_else(|_| panic!("schema {}", p.display()));
                    let mut sub: Value = serde_json::from_str(&text).unwrap();
                    if let Value::Object(sm) = &mut sub {
                        sm.remove("$id");
                        sm.remove("$schema");
                    }
                    return inline_refs(&sub, p.parent().unwrap());
                }
            }
            Value::Object(
                m.iter()
                    .filter(|(k, _)| *k != "$id")
                    .map(|(k, v)| (k.clone(), inline_refs(v, dir)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// Panics with the errors when a webhook payload does not match `webhook-schemas/<event>/<file>`.
pub fn check_webhook(event: &str, file: &str, payload: &Value) {
    let dir = fixtures().join("webhook-schemas").join(event);
    let text = std::fs::read_to_string(dir.join(file)).expect("webhook schema");
    let raw: Value = serde_json::from_str(&text).unwrap();
    let schema = inline_refs(&raw, &dir.join(".."));
    // GitHub's own payloads carry percent-encoded bot logins in URI templates
    // (`/users/x%5Bbot%5D/events{/privacy}`), which the crate's strict check rejects:
    // check templates for balanced expressions instead.
    let v = jsonschema::options()
        .with_format("uri-template", uri_template)
        .build(&schema)
        .expect("schema compiles");
    let errors: Vec<String> = v
        .iter_errors(payload)
        .take(10)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{event}/{file}: {errors:#?}\npayload: {}",
        serde_json::to_string(payload)
            .unwrap()
            .chars()
            .take(2000)
            .collect::<String>()
    );
}

/// The webhook schema file for a captured hook.
pub fn check_hook(h: &Hook) {
    let file = match h.event.as_str() {
        "repository_dispatch" | "workflow_dispatch" => "event.schema.json".to_owned(),
        _ => format!("{}.schema.json", h.json["action"].as_str().unwrap()),
    };
    check_webhook(&h.event, &file, &h.json);
}
