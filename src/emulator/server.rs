//! The emulator's shared state and the middleware every GitHub API route passes through:
//! request counting, authentication (App JWT or installation token), primary and secondary rate
//! limits, injected faults and GitHub's response headers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::http::ApiError;
use super::json::Ctx;
use super::scenario::Scenario;
use super::state::World;
use super::version::{self, ApiVersion};
use super::webhooks::Job;

/// Everything the routes share.
pub struct Shared {
    pub ctx: Ctx,
    pub scenario: Scenario,
    pub world: Mutex<World>,
    pub started: Instant,
    pub jwt_key: DecodingKey,
    pub webhook_secret: SecretString,
    pub private_key_pem: SecretString,
    /// Where webhooks go, round-robin (several: replicas behind a load balancer).
    pub webhook_urls: Vec<String>,
    pub next_webhook: std::sync::atomic::AtomicUsize,
    pub hooks: mpsc::UnboundedSender<Job>,
    /// Codes of the App-manifest flow.
    pub manifests: super::app_manifest::PendingApps,
    /// Report-action scripts (`callback = "action"`).
    pub actions: super::action_callback::ActionRunner,
    /// Woken whenever a check run is created or updated.
    pub check_runs_changed: tokio::sync::Notify,
    /// "Sign in with GitHub": the App's OAuth client and the user tokens it issued.
    pub oauth: super::oauth::OAuthStore,
    /// The Actions OIDC issuer, made at its first use (its key takes a moment to generate).
    pub oidc_issuer: std::sync::OnceLock<super::oidc::Issuer>,
}

impl Shared {
    /// The URL the next delivery goes to; `None` when there is none.
    pub fn next_webhook_url(&self) -> Option<&str> {
        if self.webhook_urls.is_empty() {
            return None;
        }
        let n = self
            .next_webhook
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(&self.webhook_urls[n % self.webhook_urls.len()])
    }

    /// The Actions OIDC issuer.
    pub fn oidc(&self) -> &super::oidc::Issuer {
        self.oidc_issuer.get_or_init(|| {
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
                .expect("an RSA key for the OIDC issuer");
            super::oidc::Issuer::new(&key).expect("the OIDC issuer's key loads")
        })
    }

    /// Milliseconds since the emulator started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Locks the world (a poisoned lock still holds consistent data: every critical section is short).
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    None,
    Jwt,
    Token,
    /// A user-to-server token (signing in with GitHub).
    User,
}

/// Routes a user-to-server token may call in the emulator: who the person is and whether they
/// can see a repository (what signing in with GitHub needs).
fn user_route(method: &Method, route: &str) -> bool {
    method == Method::GET && (route == "/user" || route == "/repos/{o}/{r}")
}

fn auth_kind(path: &str) -> AuthKind {
    if path.starts_with("/app-manifests/") {
        AuthKind::None
    } else if path == "/app"
        || path.starts_with("/app/")
        || ((path.starts_with("/repos/") || path.starts_with("/orgs/"))
            && path.ends_with("/installation"))
    {
        AuthKind::Jwt
    } else {
        AuthKind::Token
    }
}

/// Content-creating requests count against the secondary limit.
fn content_creating(method: &Method, route: &str) -> bool {
    method == Method::POST && (route.ends_with("/dispatches") || route.ends_with("/check-runs"))
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .or_else(|| v.strip_prefix("token "))
        .map(str::trim)
}

#[derive(Deserialize)]
struct Claims {
    iss: serde_json::Value,
    iat: i64,
    exp: i64,
}

/// Checks an App JWT as GitHub does.
fn verify_jwt(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let undecodable = || ApiError::unauthorized("A JSON web token could not be decoded");
    let token = bearer(headers).ok_or_else(undecodable)?;
    let mut v = Validation::new(Algorithm::RS256);
    // `iss` is an integer in App JWTs: checked below, not by the library (which wants a string).
    v.set_required_spec_claims(&["exp"]);
    v.validate_exp = false;
    let data =
        jsonwebtoken::decode::<Claims>(token, &shared.jwt_key, &v).map_err(|_| undecodable())?;
    let c = data.claims;
    let now = chrono::Utc::now().timestamp();
    let iss_ok = match &c.iss {
        serde_json::Value::Number(n) => n.as_u64() == Some(shared.ctx.app_id),
        serde_json::Value::String(s) => {
            s == &shared.ctx.app_id.to_string() || s == &format!("Iv1.{}", shared.ctx.app_slug)
        }
        _ => false,
    };
    if !iss_ok {
        return Err(ApiError::unauthorized(
            "'Issuer' claim ('iss') must be an Integer",
        ));
    }
    if c.exp > now + 600 + 30 || c.exp - c.iat > 660 {
        return Err(ApiError::unauthorized(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    if c.exp <= now {
        return Err(ApiError::unauthorized(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ));
    }
    if c.iat > now + 60 {
        return Err(ApiError::unauthorized(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ));
    }
    Ok(())
}

/// What the middleware decided under the lock.
#[derive(Clone, Copy)]
struct Gate {
    limit: u32,
    used: u32,
    reset: i64,
    /// A 5xx to answer instead of running the request.
    inject_error: Option<StatusCode>,
    lose_response: bool,
}

/// The middleware on every GitHub API route.
pub async fn api_middleware(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = format!(
        "{:04X}:{:06X}",
        shared.now_ms() % 0xFFFF,
        rand::random::<u32>() & 0xFF_FFFF
    );
    let faults = &shared.scenario.faults;
    if faults.api_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.api_latency_ms)).await;
    }
    let user = match auth_kind(&path) {
        AuthKind::Token => bearer(req.headers()).and_then(|t| shared.oauth.user_of(t)),
        _ => None,
    };
    let kind = if user.is_some() {
        AuthKind::User
    } else {
        auth_kind(&path)
    };
    let selected = version::select(req.headers(), faults.ghes_3_20);
    let version = selected.as_ref().ok().copied();
    let gate = match gate(
        &shared,
        (&method, &route, &path),
        kind,
        req.headers(),
        selected,
    ) {
        Ok((g, scope)) => {
            if let Some(scope) = scope {
                req.extensions_mut().insert(scope);
            }
            g
        }
        Err((e, g)) => {
            let g = g.unwrap_or_else(|| snapshot(&shared));
            return finish(e.into_response(), Some(&g), &request_id, version);
        }
    };
    if let Some(status) = gate.inject_error {
        let e = ApiError::new(status, "Server Error");
        return finish(e.into_response(), Some(&gate), &request_id, version);
    }
    if let Some(v) = version {
        req.extensions_mut().insert(v);
    }
    if let Some(user) = user {
        if !user_route(&method, &route) {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            );
            return finish(e.into_response(), Some(&gate), &request_id, version);
        }
        req.extensions_mut().insert(user);
    }
    let resp = next.run(req).await;
    if gate.lose_response {
        let e = ApiError::new(StatusCode::BAD_GATEWAY, "Server Error");
        return finish(e.into_response(), Some(&gate), &request_id, version);
    }
    finish(resp, Some(&gate), &request_id, version)
}

type GateError = (ApiError, Option<Gate>);

/// Counting, the API version, authentication, limits and fault decisions, all under one short
/// lock.
fn gate(
    shared: &Shared,
    (method, route, path): (&Method, &str, &str),
    kind: AuthKind,
    headers: &HeaderMap,
    version: Result<ApiVersion, ApiError>,
) -> Result<(Gate, Option<super::scopes::TokenScope>), GateError> {
    let faults = &shared.scenario.faults;
    // JWT verification is CPU work: do it before taking the lock.
    let jwt = if kind == AuthKind::Jwt {
        verify_jwt(shared, headers)
    } else {
        Ok(())
    };
    let now_s = chrono::Utc::now();
    let now_ms = shared.now_ms();
    let mut w = shared.world();
    w.counters.requests_total += 1;
    *w.counters
        .requests_by_route
        .entry(format!("{method} {route}"))
        .or_insert(0) += 1;
    let version = version.map_err(|e| (e, None))?;
    *w.counters
        .requests_by_api_version
        .entry(version.as_str())
        .or_insert(0) += 1;
    jwt.map_err(|e| (e, None))?;
    let mut scope = None;
    if kind == AuthKind::Token {
        let token = bearer(headers).unwrap_or("");
        match w.tokens.get(token) {
            Some(t) if t.expires_at > now_s => {
                // A narrowed token: outside its repositories 404, beyond its permissions 403.
                t.scope
                    .check(&w, &shared.ctx, method, route, path)
                    .map_err(|e| (e, None))?;
                scope = Some(t.scope.clone());
            }
            _ => return Err((ApiError::unauthorized("Bad credentials"), None)),
        }
    }
    let epoch = now_s.timestamp();
    if epoch - w.rate.window_start >= 3600 {
        w.rate.window_start = epoch;
        w.rate.used = 0;
    }
    let limit = faults.rate_limit_per_hour;
    let reset = w.rate.window_start + 3600;
    let mut g = Gate {
        limit,
        used: w.rate.used,
        reset,
        inject_error: None,
        lose_response: false,
    };
    if kind == AuthKind::Token {
        let who = bearer(headers).unwrap_or("");
        let who = &who[who.len().saturating_sub(6)..];
        limits(shared, &mut w, &mut g, (method, route, who), now_ms)?;
    }
    if faults.api_error_rate > 0.0 && w.rng.gen_bool(faults.api_error_rate) {
        w.counters.api_errors_injected += 1;
        g.inject_error = Some(
            [
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
            ][w.rng.gen_range(0..3)],
        );
    } else if faults.lost_response_rate > 0.0 && w.rng.gen_bool(faults.lost_response_rate) {
        w.counters.lost_responses += 1;
        g.lose_response = true;
    }
    Ok((g, scope))
}

/// Primary and secondary limits of the installation token bucket.
fn limits(
    shared: &Shared,
    w: &mut World,
    g: &mut Gate,
    (method, route, who): (&Method, &str, &str),
    now_ms: u64,
) -> Result<(), GateError> {
    let faults = &shared.scenario.faults;
    let limit = g.limit;
    // Secondary limit: anything arriving while the client was told to wait is a violation.
    let waiting = now_ms < w.rate.blocked_until_ms;
    if waiting {
        w.counters.rate_limit_violations += 1;
        *w.counters
            .rate_limit_violations_by_route
            .entry(format!("{method} {route}"))
            .or_insert(0) += 1;
        if w.counters.first_rate_limit_violation.is_none() {
            w.counters.first_rate_limit_violation = Some(format!(
                "{method} {route} by token …{who} at {now_ms} ms; token …{} was told at {} ms to wait until {} ms",
                w.rate.blocked_by, w.rate.blocked_at_ms, w.rate.blocked_until_ms
            ));
        }
    }
    if w.rate.used >= limit {
        w.counters.primary_limit_hits += 1;
        let e = ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "API rate limit exceeded for installation ID {}. If you reach out to GitHub Support for help, please include the request ID.",
                shared.ctx.installation_id
            ),
        );
        return Err((e, Some(*g)));
    }
    w.rate.used += 1;
    g.used = w.rate.used;
    if content_creating(method, route) {
        w.counters.content_creating_requests += 1;
    }
    if let (Some(per_min), true) = (
        faults.secondary_limit_per_minute,
        content_creating(method, route),
    ) {
        let window = faults.secondary_window_ms;
        while w
            .rate
            .content_times
            .front()
            .is_some_and(|&t| t + window <= now_ms)
        {
            w.rate.content_times.pop_front();
        }
        if waiting || w.rate.content_times.len() >= per_min as usize {
            let oldest = w.rate.content_times.front().copied().unwrap_or(now_ms);
            let wait_s = ((oldest + window).saturating_sub(now_ms))
                .div_ceil(1000)
                .max(1);
            w.rate.blocked_until_ms = w.rate.blocked_until_ms.max(now_ms + wait_s * 1000);
            w.rate.blocked_by = who.to_owned();
            w.rate.blocked_at_ms = now_ms;
            w.counters.secondary_limit_hits += 1;
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
            )
            .with_header("retry-after", wait_s.to_string());
            return Err((e, Some(*g)));
        }
        w.rate.content_times.push_back(now_ms);
    }
    Ok(())
}

/// The rate-limit figures as they stand, for answers that did not pass the gate.
fn snapshot(shared: &Shared) -> Gate {
    let w = shared.world();
    Gate {
        limit: shared.scenario.faults.rate_limit_per_hour,
        used: w.rate.used,
        reset: w.rate.window_start + 3600,
        inject_error: None,
        lose_response: false,
    }
}

/// Adds GitHub's headers to a response (`x-github-api-version-selected` when a version was).
fn finish(
    mut resp: Response,
    gate: Option<&Gate>,
    request_id: &str,
    version: Option<ApiVersion>,
) -> Response {
    let h = resp.headers_mut();
    if let Some(g) = gate {
        let remaining = g.limit.saturating_sub(g.used);
        for (k, v) in [
            ("x-ratelimit-limit", g.limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-used", g.used.to_string()),
            ("x-ratelimit-reset", g.reset.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-github-request-id", v);
    }
    if let Some(v) = version {
        h.insert(
            "x-github-api-version-selected",
            HeaderValue::from_static(v.as_str()),
        );
    }
    resp
}
