//! The run page behind "Sign in with GitHub": `PUBLIC_URL/runs` and `PUBLIC_URL/runs/{id}`
//! (the check run's Details link), shown only to people GitHub lets read the run's hub
//! repository, with cancel and "Re-run failed" for those who may push to it.
//!
//! - `auth`: the App's OAuth web flow and the session cookie;
//! - `run_pages`: the handlers of the pages, their live updates and their buttons;
//! - `pages`: the HTML, `markdown`: spoke summaries, `github`: the person's GitHub calls.

mod assets;
mod auth;
pub mod github;
pub mod markdown;
pub mod pages;
mod run_pages;
pub mod session;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use url::Url;

use crate::config::Config;
use crate::engine::Engine;

/// The Content-Security-Policy of every page: scripts, styles and images only from the hub
/// itself, nothing inline, no frames, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the pages need besides the engine; `None` inside when sign-in is not configured.
#[derive(Clone)]
pub struct WebState(pub Option<Arc<Web>>);

pub struct Web {
    pub github: github::GitHubWeb,
    pub sealer: session::Sealer,
    /// Where people reach the hub (`SPOKEHUB_PUBLIC_URL`, else the listen address).
    pub public: Url,
    /// GitHub's web address (repository links).
    pub web_url: String,
    /// Refreshes in this replica take turns (their results are shared through the ledger).
    refreshes: tokio::sync::Mutex<()>,
}

impl Web {
    pub fn from_config(config: &Config) -> WebState {
        let Some(oauth) = &config.oauth else {
            return WebState(None);
        };
        let mut public = config
            .public_url
            .clone()
            .unwrap_or_else(|| Url::parse(&format!("http://{}/", config.listen)).expect("a URL"));
        if !public.path().ends_with('/') {
            let path = format!("{}/", public.path());
            public.set_path(&path);
        }
        let secure = public.scheme() == "https";
        use secrecy::ExposeSecret as _;
        WebState(Some(Arc::new(Web {
            github: github::GitHubWeb::new(
                oauth,
                config.api_url.clone(),
                config.web_url.clone(),
                config.api_version,
            ),
            sealer: session::Sealer::new(oauth.client_secret.expose_secret(), secure),
            public,
            web_url: config.web_url.as_str().trim_end_matches('/').to_owned(),
            refreshes: Default::default(),
        })))
    }

    /// A path of this hub as an absolute URL.
    pub fn url(&self, path: &str) -> String {
        self.public
            .join(path.trim_start_matches('/'))
            .map(String::from)
            .unwrap_or_default()
    }

    /// `scheme://host[:port]` of the public URL, as browsers send it in `Origin`.
    pub fn origin(&self) -> String {
        self.public.origin().ascii_serialization()
    }
}

/// The routes of the pages.
pub fn routes(config: &Config) -> Router<Engine> {
    Router::new()
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route("/runs", get(run_pages::list))
        .route("/runs/{id}", get(run_pages::page))
        .route("/runs/{id}/fragment", get(run_pages::fragment))
        .route("/runs/{id}/live", get(run_pages::live))
        .route("/runs/{id}/cancel", post(run_pages::cancel))
        .route("/runs/{id}/rerun-failed", post(run_pages::rerun_failed))
        .route("/assets/run.js", get(assets::script))
        .route("/assets/spokehub.css", get(assets::style))
        .layer(axum::Extension(Web::from_config(config)))
}

/// An HTML answer with the pages' security headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

/// Headers every page and asset carries.
pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A redirect (303: the next request is a GET).
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    r
}

/// Adds a `Set-Cookie` to a response.
pub fn with_cookie(mut r: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// The page when sign-in is not configured: the same for every path, so it says nothing of
/// what runs exist.
pub fn page_off() -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::message(
            "The run page is off",
            "This hub has no OAuth client for signing in with GitHub. Set SPOKEHUB_OAUTH_CLIENT_ID \
             and SPOKEHUB_OAUTH_CLIENT_SECRET (spokehub app create writes both), then reload.",
        ),
    )
}
