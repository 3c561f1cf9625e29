//! HTTP: webhook intake, health, and the run API. Handlers only verify, record and answer;
//! the engine does the work.

mod api;
pub mod body;
pub mod connections;
mod intake;
mod work;

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::Engine;
use crate::github::{GitHubApp, GitHubConfig};
use crate::store::Store;

pub use body::MAX_WEBHOOK_BODY;

/// Largest body of the other routes (the API takes small JSON bodies).
const MAX_API_BODY: usize = 64 * 1024;

/// The HTTP routes of a hub.
pub fn router(engine: Engine) -> Router {
    // The webhook reads its body itself, within `body::BodyBudget`.
    let webhook = Router::new()
        .route("/webhook", post(intake::webhook))
        .layer(axum::Extension(body::BodyBudget::default()))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/runs/{id}", get(api::run))
        .route("/api/v1/runs/{id}/cancel", post(api::cancel))
        .route("/api/v1/work/claim", post(work::claim))
        .route("/api/v1/work/{lease_id}/heartbeat", post(work::heartbeat))
        .route("/api/v1/work/{lease_id}/complete", post(work::complete))
        .layer(axum::Extension(api::HealthProbe::default()))
        .merge(crate::web::routes(engine.config()))
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .merge(webhook)
        .with_state(engine)
}

/// A running hub.
pub struct HubHandle {
    pub addr: SocketAddr,
    pub engine: Engine,
    server: tokio::task::JoinHandle<()>,
}

impl HubHandle {
    /// Stops in order: the listener closes, nothing new starts, work in hand finishes (up to
    /// [`STOP_GRACE`]). False when the grace ran out.
    pub async fn stop(self) -> bool {
        let done = self.engine.stop(STOP_GRACE).await;
        let _ = self.server.await;
        done
    }

    /// Stops serving (the engine's workers stop with the runtime).
    pub fn abort(self) {
        self.server.abort();
    }
}

/// Checks the App's credentials with GitHub, opens the store, resumes unfinished runs and
/// serves on `listener`.
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<HubHandle> {
    let mut github = GitHubConfig::new(
        config.app_id,
        config.private_key.clone(),
        config.api_url.clone(),
    );
    github.api_version = config.api_version;
    let telemetry = std::sync::Arc::new(crate::telemetry::Telemetry::new());
    let checked = GitHubApp::new(github.clone()).context("cannot set up the GitHub App client")?;
    // Wrong credentials or API URL stop the hub here, not at the first webhook.
    let slug = checked.check_credentials().await?;
    tracing::info!(app = slug, "GitHub accepted the App's credentials");
    let store = Store::open(&config.database_url).await?;
    // Replicas on one Postgres ledger share GitHub's rate limits.
    github.shared_rate = store.shared_rate();
    github.telemetry = Some(telemetry.clone());
    let github = GitHubApp::new(github).context("cannot set up the GitHub App client")?;
    let addr = listener.local_addr()?;
    let replica = config.replica_id.clone().unwrap_or_else(|| {
        crate::store::ReplicaId::new(format!("{}:{}", crate::config::host_name(), addr.port()))
    });
    let engine = Engine::new(store, github, config, replica, telemetry).await?;
    engine.start().await?;
    let app = router(engine.clone());
    let max_connections = connections::connection_limit();
    let server = tokio::spawn(connections::serve(
        listener,
        app,
        max_connections,
        engine.stop_signal(),
    ));
    tracing::info!(%addr, "spokehub listening");
    Ok(HubHandle {
        addr,
        engine,
        server,
    })
}

/// How long a stop may take before what is left is abandoned to the next start (within the
/// 30 s an orchestrator usually grants after SIGTERM).
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(25);

/// `spokehub serve`: runs until SIGTERM or Ctrl-C, then stops in order: no new connections,
/// no new work, the GitHub requests in hand finish and are recorded; exit 0.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let hub = start(config, listener).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        r = tokio::signal::ctrl_c() => {
            r.context("cannot listen for Ctrl-C")?;
            tracing::info!("interrupted: stopping");
        }
    }
    let started = std::time::Instant::now();
    if hub.stop().await {
        tracing::info!(ms = started.elapsed().as_millis() as u64, "stopped");
    } else {
        tracing::warn!("stop took longer than {STOP_GRACE:?}; the rest resumes at the next start");
    }
    Ok(())
}
