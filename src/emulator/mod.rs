//! The GitHub emulator: a real HTTP server that behaves like the parts of GitHub the hub uses
//! (App auth, installation repositories, workflow dispatch and simulated runs, repository
//! dispatch, check runs, webhooks, rate limits, faults). It shares no code or state with the hub.
//!
//! GitHub API routes live at the root like `api.github.com` (App JWT for `/app/*`,
//! `/repos/{o}/{r}/installation` and `/orgs/{org}/installation`; installation tokens elsewhere;
//! none for `/app-manifests/{code}/conversions`). Every API answer carries `x-ratelimit-*` and
//! `x-github-request-id`; errors are `{message, documentation_url, status}`.
//! `X-GitHub-Api-Version` selects `2022-11-28` (the default) or `2026-03-10` (a workflow dispatch
//! always answers 200 with the run details), echoed in `x-github-api-version-selected`; any
//! other value is GitHub's 400 (see `version`).
//!
//! `/_emulator/*` is the person's console and the inspection endpoint (no auth, never faulted):
//! - `POST /_emulator/hub/dispatch` `{"workflow"?: "spokehub-hub.yml", "ref"?: "main",
//!   "inputs": {..}, "sender"?: "octocat", "wait_for_check_run"?: false, "wait_timeout_ms"?:
//!   10000}` -> `{workflow_run_id, run_url, html_url, head_sha, delivery_id}`: a hub workflow
//!   run plus the `workflow_dispatch` webhook (422/404 like GitHub). The hub run id is the
//!   `external_id` of the check run the hub then creates on `head_sha`; when waiting, the answer
//!   also has `hub_run_id` and `check_run_id` (`null` if none appeared within the wait, <= 10 s).
//! - `POST /_emulator/check-runs/{id}/request-action` `{"identifier", "sender"?}` ->
//!   `{delivery_id}`: a button click (`check_run.requested_action`); 422 for an unknown identifier.
//! - `POST /_emulator/check-runs/{id}/rerequest` `{"sender"?}` -> `{delivery_id}`
//!   (`check_run.rerequested`; 422 unless the check run is completed).
//! - `GET /_emulator/state?summary=1` -> counts only: `workflow_runs_created`,
//!   `workflow_runs_by_status`, `workflow_runs_by_conclusion`, `check_runs_total`,
//!   `repository_dispatches_total`, `requests_total`, `requests_by_route` (`"METHOD /route"`),
//!   `requests_by_api_version`, `webhook_deliveries_total`, `webhooks_sent`, `webhooks_dropped`,
//!   `webhooks_duplicated`, `webhooks_pending`, `rate_limit_violations` (and `_by_route`), `secondary_limit_hits`,
//!   `primary_limit_hits`, `api_errors_injected`, `lost_responses`, `tokens_minted`,
//!   `content_creating_requests`.
//! - `GET /_emulator/state` -> the counts plus `org`, `hub_repo`, `repos[]`, `workflow_runs[]`
//!   (`id, repo, workflow, event, inputs, status, conclusion, display_title, run_attempt,
//!   run_number, head_sha, actor, html_url, created_at`), `check_runs[]` (`id, repo, head_sha,
//!   name, status, conclusion, output{title,summary,text}, annotations_count, actions,
//!   external_id, details_url, updates`), `webhook_deliveries[]` (`id, guid, event, action,
//!   status_code, status, duration_ms, redelivery`), `repository_dispatches[]`
//!   (`repo, event_type, client_payload`).

mod action_callback;
mod app_manifest;
mod control;
mod http;
mod json;
mod oauth;
pub mod oidc;
mod routes_actions;
mod routes_app;
mod routes_checks;
pub mod scenario;
mod scopes;
mod server;
mod sim;
mod state;
mod version;
pub mod webhooks;
pub mod workers;
pub mod workflow;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use axum::routing::{get, post};
use axum::Router;
use jsonwebtoken::DecodingKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot};

pub use scenario::{Scenario, ScenarioError};

use server::Shared;

/// The emulator; see [`Emulator::start`].
pub struct Emulator;

/// A running emulator.
pub struct EmulatorHandle {
    /// `http://127.0.0.1:PORT`: the API URL too (routes are at the root, like api.github.com).
    pub base_url: String,
    pub app_id: u64,
    pub installation_id: u64,
    pub org: String,
    /// Full name `org/hub-repo`.
    pub hub_repo: String,
    /// PEM (PKCS#8) of the App's private key.
    pub private_key_pem: String,
    pub webhook_secret: String,
    /// The App's OAuth client (signing in with GitHub).
    pub oauth_client_id: String,
    pub oauth_client_secret: String,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    queue: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("org", &self.org)
            .field("hub_repo", &self.hub_repo)
            .field("private_key_pem", &"[redacted]")
            .field("webhook_secret", &"[redacted]")
            .field("oauth_client_id", &self.oauth_client_id)
            .field("oauth_client_secret", &"[redacted]")
            .finish()
    }
}

impl EmulatorHandle {
    /// Stops serving and delivering webhooks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.queue.abort();
    }
}

fn load_key(sc: &Scenario) -> anyhow::Result<Option<RsaPrivateKey>> {
    let pem = match (&sc.app.private_key, &sc.app.private_key_file) {
        (Some(k), _) => k.expose_secret().to_owned(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read app.private_key_file {f}"))?,
        (None, None) => return Ok(None),
    };
    let key = RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|_| {
            anyhow::anyhow!("the App private key in the scenario is not an RSA PEM key")
        })?;
    Ok(Some(key))
}

/// `app.pem` and `app.env` (what `spokehub serve` needs to talk to this emulator). With a
/// webhook URL `http://HUB/webhook`, the hub's public URL is `http://HUB` and the run page's
/// OAuth client is included.
fn write_out(dir: &Path, h: &EmulatorHandle, hub_url: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pem_path = dir.join("app.pem");
    std::fs::write(&pem_path, &h.private_key_pem)
        .with_context(|| format!("cannot write {}", pem_path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&pem_path, std::fs::Permissions::from_mode(0o600));
    }
    let abs = std::fs::canonicalize(&pem_path).unwrap_or(pem_path);
    let env = format!(
        "SPOKEHUB_APP_ID={}\nSPOKEHUB_PRIVATE_KEY_FILE={}\nSPOKEHUB_WEBHOOK_SECRET={}\nSPOKEHUB_GITHUB_API_URL={}\nSPOKEHUB_HUB_REPOSITORY={}\n",
        h.app_id,
        abs.display(),
        h.webhook_secret,
        h.base_url,
        h.hub_repo,
    );
    let env = match hub_url {
        Some(hub) => format!(
            "{env}SPOKEHUB_PUBLIC_URL={hub}\nSPOKEHUB_OAUTH_CLIENT_ID={}\nSPOKEHUB_OAUTH_CLIENT_SECRET={}\n",
            h.oauth_client_id, h.oauth_client_secret
        ),
        None => env,
    };
    let env_path = dir.join("app.env");
    std::fs::write(&env_path, env)
        .with_context(|| format!("cannot write {}", env_path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    use routes_actions as a;
    use routes_app as app;
    use routes_checks as c;
    let api = Router::new()
        .route("/app", get(app::get_app))
        .route("/user", get(oauth::get_user))
        .route("/app/installations", get(app::list_installations))
        .route(
            "/app/installations/{id}/access_tokens",
            post(app::create_token),
        )
        .route("/app/hook/deliveries", get(app::list_deliveries))
        .route("/app/hook/deliveries/{id}", get(app::get_delivery))
        .route(
            "/app/hook/deliveries/{id}/attempts",
            post(app::redeliver_route),
        )
        .route(
            "/app-manifests/{code}/conversions",
            post(app_manifest::conversion),
        )
        .route("/orgs/{org}/installation", get(app::org_installation))
        .route("/orgs/{org}/properties/values", get(app::property_values))
        .route("/installation/repositories", get(app::installation_repos))
        .route("/rate_limit", get(app::rate_limit))
        .route("/repos/{o}/{r}", get(app::get_repo))
        .route("/repos/{o}/{r}/installation", get(app::repo_installation))
        .route("/repos/{o}/{r}/contents/{*path}", get(app::get_contents))
        .route("/repos/{o}/{r}/commits/{reference}", get(app::get_commit))
        .route(
            "/repos/{o}/{r}/commits/{reference}/check-runs",
            get(c::for_ref),
        )
        .route(
            "/repos/{o}/{r}/actions/workflows/{wf}",
            get(a::get_workflow),
        )
        .route(
            "/repos/{o}/{r}/actions/workflows/{wf}/dispatches",
            post(a::dispatch_route),
        )
        .route(
            "/repos/{o}/{r}/actions/workflows/{wf}/runs",
            get(a::workflow_runs_route),
        )
        .route("/repos/{o}/{r}/actions/runs", get(a::runs_route))
        .route("/repos/{o}/{r}/actions/runs/{id}", get(a::get_run))
        .route(
            "/repos/{o}/{r}/actions/runs/{id}/cancel",
            post(a::cancel_run),
        )
        .route("/repos/{o}/{r}/dispatches", post(a::repo_dispatch_route))
        .route("/repos/{o}/{r}/check-runs", post(c::create))
        .route(
            "/repos/{o}/{r}/check-runs/{id}",
            get(c::get).patch(c::update),
        )
        .fallback(|| async { http::ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            server::api_middleware,
        ));
    let console = Router::new()
        .route(
            "/organizations/{org}/settings/apps/new",
            get(app_manifest::new_app).post(app_manifest::new_app),
        )
        .route(
            "/login/oauth/authorize",
            get(oauth::authorize).post(oauth::authorize_post),
        )
        .route("/login/oauth/access_token", post(oauth::access_token))
        .route("/_emulator/oauth/expire", post(oauth::expire))
        .route(
            "/_emulator/oauth/callbacks",
            post(oauth::register_callbacks),
        )
        .route(
            "/_services/token/.well-known/openid-configuration",
            get(oidc::discovery),
        )
        .route("/_services/token/.well-known/jwks", get(oidc::jwks))
        .route("/_services/token/id-token", get(oidc::id_token))
        .route("/_emulator/oidc/jobs", post(oidc::add_job))
        .route("/_emulator/state", get(control::state))
        .route("/_emulator/hub/dispatch", post(control::hub_dispatch))
        .route(
            "/_emulator/check-runs/{id}/request-action",
            post(control::request_action),
        )
        .route(
            "/_emulator/check-runs/{id}/rerequest",
            post(control::rerequest),
        );
    console.merge(api).with_state(shared)
}

impl Emulator {
    /// Serve on `listener` (already bound, so callers can know both addresses before starting);
    /// deliver webhooks to `webhook_url`; write app.pem/app.env into `out_dir` when given.
    pub async fn start(
        listener: tokio::net::TcpListener,
        scenario: Scenario,
        webhook_url: String,
        out_dir: Option<PathBuf>,
    ) -> anyhow::Result<EmulatorHandle> {
        let urls = if webhook_url.is_empty() {
            Vec::new()
        } else {
            vec![webhook_url]
        };
        Self::start_balanced(listener, scenario, urls, out_dir).await
    }

    /// [`Emulator::start`] delivering to several webhook URLs, one delivery each, round-robin
    /// (the way a load balancer in front of several hub replicas spreads them).
    pub async fn start_balanced(
        listener: tokio::net::TcpListener,
        scenario: Scenario,
        webhook_urls: Vec<String>,
        out_dir: Option<PathBuf>,
    ) -> anyhow::Result<EmulatorHandle> {
        let hub_url = webhook_urls
            .first()
            .and_then(|u| u.strip_suffix("/webhook"))
            .map(str::to_owned);
        let key = match load_key(&scenario)? {
            Some(k) => k,
            None => {
                tokio::task::spawn_blocking(|| {
                    RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
                        .map_err(|_| anyhow::anyhow!("cannot generate the App key"))
                })
                .await??
            }
        };
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| anyhow::anyhow!("cannot encode the App key"))?
            .to_string();
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| anyhow::anyhow!("cannot encode the App public key"))?;
        let jwt_key = DecodingKey::from_rsa_pem(public_pem.as_bytes())
            .map_err(|_| anyhow::anyhow!("cannot load the App public key"))?;
        let webhook_secret = match &scenario.app.webhook_secret {
            Some(s) => s.expose_secret().to_owned(),
            None => hex::encode(rand::random::<[u8; 20]>()),
        };
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        let base_url = format!("http://{host}:{}", addr.port());
        let ctx = json::Ctx {
            base: base_url.clone(),
            org: scenario.org.login.clone(),
            org_id: 9_000_001,
            app_id: scenario.app.id,
            app_slug: scenario.app.slug.clone(),
            installation_id: scenario.app.installation_id,
            cache: Default::default(),
        };
        let world = state::World::new(&scenario);
        let hub_repo = world.repos[world.hub_repo].full_name.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            ctx,
            world: Mutex::new(world),
            started: Instant::now(),
            jwt_key,
            webhook_secret: SecretString::from(webhook_secret.clone()),
            private_key_pem: SecretString::from(private_pem.clone()),
            webhook_urls,
            next_webhook: std::sync::atomic::AtomicUsize::new(0),
            hooks: tx,
            manifests: app_manifest::PendingApps::default(),
            actions: action_callback::ActionRunner::new(&scenario)?,
            check_runs_changed: tokio::sync::Notify::new(),
            oauth: oauth::OAuthStore::new(&scenario),
            oidc_issuer: std::sync::OnceLock::new(),
            scenario,
        });
        let queue = tokio::spawn(webhooks::run_queue(shared.clone(), rx));
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let handle = EmulatorHandle {
            base_url,
            app_id: shared.ctx.app_id,
            installation_id: shared.ctx.installation_id,
            org: shared.ctx.org.clone(),
            hub_repo,
            private_key_pem: private_pem,
            webhook_secret,
            oauth_client_id: shared.oauth.client_id.clone(),
            oauth_client_secret: shared.oauth.client_secret().to_owned(),
            stop,
            server,
            queue,
        };
        if let Some(dir) = out_dir {
            write_out(&dir, &handle, hub_url.as_deref())?;
        }
        Ok(handle)
    }
}

/// `spokehub emulate --listen ADDR --scenario FILE --out DIR --webhook-url URL`.
#[derive(Debug, Clone)]
pub struct EmulateArgs {
    pub listen: SocketAddr,
    pub scenario: Option<PathBuf>,
    pub out: PathBuf,
    /// One or more; several are served round-robin.
    pub webhook_urls: Vec<String>,
}

/// What `spokehub emulate` prints at start: where it is, and how to act as a person.
pub fn banner(h: &EmulatorHandle, webhook_urls: &[String], env_file: &Path) -> String {
    let webhook_url = webhook_urls.join(", ");
    let b = &h.base_url;
    format!(
        "GitHub emulator on {b} (org {}, hub repo {}, app {}, installation {}); webhooks to {webhook_url}; credentials in {}\n\
         Act as a person (JSON bodies, no auth):\n\
         \x20 POST {b}/_emulator/hub/dispatch {{\"inputs\": {{\"task\": \"T\", \"targets\": \"\"}}, \"wait_for_check_run\": true}}\n\
         \x20      \"Run workflow\" on the hub workflow; answers head_sha and delivery_id, and hub_run_id when waiting\n\
         \x20 POST {b}/_emulator/check-runs/{{id}}/request-action {{\"identifier\": \"rerun_failed\"}}   a check-run button\n\
         \x20 POST {b}/_emulator/check-runs/{{id}}/rerequest   \"Re-run\" on a completed check run\n\
         \x20 GET  {b}/_emulator/state   everything it holds; a hub run id is the external_id of the hub's check run",
        h.org,
        h.hub_repo,
        h.app_id,
        h.installation_id,
        env_file.display()
    )
}

/// Runs the emulator until Ctrl-C.
pub async fn run(args: EmulateArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let h = Emulator::start_balanced(
        listener,
        scenario,
        args.webhook_urls.clone(),
        Some(args.out.clone()),
    )
    .await?;
    println!(
        "{}",
        banner(&h, &args.webhook_urls, &args.out.join("app.env"))
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    h.shutdown().await;
    Ok(())
}
