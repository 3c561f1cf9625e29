//! The local web page of `spokehub app create`: `GET /` shows the form that posts the manifest
//! to GitHub; `GET /callback?code=...&state=...` is where GitHub redirects after the person
//! confirms. A wrong or missing `state` is refused (400) and nothing is written; a failed
//! exchange is shown and the form may be sent again. The first success ends the flow.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::SecretString;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tokio::sync::oneshot;
use url::Url;

use super::files::{self, Credentials, Written};
use super::AppCreateArgs;
use crate::web::pages::esc;

/// What the flow created.
#[derive(Debug, Clone)]
pub struct Created {
    pub app_id: u64,
    pub name: String,
    /// `{html_url}/installations/new`.
    pub install_url: String,
    pub written: Written,
}

struct Flow {
    org: String,
    /// The new-App page with `?state=`.
    action: Url,
    manifest: String,
    state: SecretString,
    api_url: Url,
    public_url: Url,
    hub_repo: crate::hub::RepoName,
    out: std::path::PathBuf,
    http: reqwest::Client,
    /// Serializes callbacks so that only one exchange runs at a time.
    busy: tokio::sync::Mutex<()>,
    done: Mutex<Option<oneshot::Sender<Created>>>,
}

/// The conversion's answer (only what is used; the rest is ignored). No `Debug`: secrets.
#[derive(Deserialize)]
struct Conversion {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    slug: Option<String>,
    html_url: String,
    pem: SecretString,
    webhook_secret: Option<SecretString>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<SecretString>,
}

fn html(status: StatusCode, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>spokehub app create</title></head><body>{body}</body></html>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

async fn form(State(f): State<Arc<Flow>>) -> Response {
    html(
        StatusCode::OK,
        &format!(
            "<h1>Create the spokehub GitHub App for {org}</h1>\
             <p>This sends the App's manifest to GitHub; confirm there and GitHub sends you back here.</p>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"manifest\" value=\"{manifest}\">\
             <button type=\"submit\">Create the GitHub App on {org}</button></form>",
            org = esc(&f.org),
            action = esc(f.action.as_str()),
            manifest = esc(&f.manifest),
        ),
    )
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
}

async fn callback(State(f): State<Arc<Flow>>, Query(q): Query<CallbackQuery>) -> Response {
    use secrecy::ExposeSecret as _;
    let state_ok = q
        .state
        .as_deref()
        .is_some_and(|s| bool::from(s.as_bytes().ct_eq(f.state.expose_secret().as_bytes())));
    if !state_ok {
        eprintln!("Refused a callback with a wrong or missing state (nothing written).");
        return html(
            StatusCode::BAD_REQUEST,
            "<h1>Refused</h1><p>The <code>state</code> does not match the one this command sent: \
             this redirect did not come from the form it served. Nothing was written.</p>",
        );
    }
    let Some(code) = q.code.filter(|c| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    }) else {
        return html(
            StatusCode::BAD_REQUEST,
            "<h1>Refused</h1><p>No valid <code>code</code> in the redirect.</p>",
        );
    };
    let _one_at_a_time = f.busy.lock().await;
    if f.done.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
        return html(
            StatusCode::GONE,
            "<h1>Done already</h1><p>The App was created.</p>",
        );
    }
    match exchange(&f, &code).await {
        Ok(created) => {
            let body = format!(
                "<h1>Created the GitHub App {name}</h1><p>Wrote {config}. Now \
                 <a href=\"{url}\">install it on {org}</a>; the terminal shows the next steps. \
                 You may close this page.</p>",
                name = esc(&created.name),
                config = esc(&created.written.config.display().to_string()),
                url = esc(&created.install_url),
                org = esc(&f.org),
            );
            if let Some(tx) = f.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(created);
            }
            html(StatusCode::OK, &body)
        }
        Err(e) => {
            eprintln!(
                "Could not finish creating the App: {e:#}\nSend the form again from the page."
            );
            html(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "<h1>Could not finish</h1><p>{}</p><p><a href=\"/\">Start again</a></p>",
                    esc(&format!("{e:#}"))
                ),
            )
        }
    }
}

/// Exchanges the code and writes the files.
async fn exchange(f: &Flow, code: &str) -> anyhow::Result<Created> {
    let url = super::join(&f.api_url, &format!("app-manifests/{code}/conversions"));
    let resp = f
        .http
        .post(url.clone())
        .header(header::ACCEPT, "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header(header::USER_AGENT, "spokehub-app-create")
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    if status != StatusCode::CREATED {
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(anyhow!(
            "GitHub answered {status} to the code exchange {message:?} (codes are single-use and expire after an hour)"
        ));
    }
    let c: Conversion = resp
        .json()
        .await
        .context("the code exchange answered something that is not an App")?;
    let webhook_secret = c
        .webhook_secret
        .ok_or_else(|| anyhow!("GitHub returned no webhook secret for the App"))?;
    let name = c.name.or(c.slug).unwrap_or_else(|| format!("app {}", c.id));
    let creds = Credentials {
        app_id: c.id,
        name: name.clone(),
        pem: c.pem,
        webhook_secret,
        oauth: c.client_id.zip(c.client_secret),
    };
    let out = f.out.clone();
    let (api_url, public_url, hub_repo) =
        (f.api_url.clone(), f.public_url.clone(), f.hub_repo.clone());
    let written = tokio::task::spawn_blocking(move || {
        files::write(&out, &creds, &api_url, &public_url, &hub_repo)
    })
    .await??;
    Ok(Created {
        app_id: c.id,
        name,
        install_url: format!("{}/installations/new", c.html_url.trim_end_matches('/')),
        written,
    })
}

/// Serves the page on `listener` until an App is created (or Ctrl-C).
pub async fn run(
    listener: tokio::net::TcpListener,
    args: &AppCreateArgs,
    api_url: Url,
) -> anyhow::Result<Created> {
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let local = Url::parse(&format!("http://{host}:{}/", addr.port()))?;
    let redirect = local.join("callback")?;
    let manifest = super::render_manifest(&args.public_url, &redirect, args.name.as_deref())?;
    let state = hex::encode(rand::random::<[u8; 32]>());
    let mut action = super::join(
        &args.github_url,
        &format!("organizations/{}/settings/apps/new", args.org),
    );
    action.query_pairs_mut().append_pair("state", &state);
    let (tx, rx) = oneshot::channel();
    let flow = Arc::new(Flow {
        org: args.org.clone(),
        action,
        manifest: manifest.to_string(),
        state: SecretString::from(state),
        api_url,
        public_url: args.public_url.clone(),
        hub_repo: args.hub_repository()?,
        out: args.out.clone(),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?,
        busy: tokio::sync::Mutex::new(()),
        done: Mutex::new(Some(tx)),
    });
    let app = Router::new()
        .route("/", get(form))
        .route("/callback", get(callback))
        .with_state(flow);
    println!("Open {local} in a browser on this machine to create the GitHub App for {} (Ctrl-C to stop).", args.org);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let outcome = tokio::select! {
        created = rx => created.map_err(|_| anyhow!("the local page stopped")),
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted: no App was created")),
    };
    let _ = stop_tx.send(());
    server.await.context("the local page failed")??;
    outcome
}
