//! Signing in with GitHub (the App's OAuth web flow), the session it leaves, its refresh when
//! the user-to-server token expires, CSRF checks, and signing out.

use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::github::{UserTokens, WebGitHubError};
use super::session::{
    cookie, random_token, Session, SignIn, SESSION_COOKIE, SESSION_MAX_AGE_S, SIGN_IN_COOKIE,
    SIGN_IN_MAX_AGE_S,
};
use super::{html, page_off, pages, see_other, with_cookie, Web, WebState};
use crate::engine::Engine;
use crate::store::Store;

/// A token is refreshed this long before it expires.
const REFRESH_MARGIN_S: i64 = 60;
/// How long the outcome of a refresh is reused by requests that carried the same old token.
const REFRESH_REUSE: Duration = Duration::from_secs(60);

fn now_s() -> i64 {
    crate::store::now_ms() / 1000
}

/// Who is asking.
pub enum Visitor {
    /// Signed in; `set_cookie` carries the session when its token was just refreshed.
    SignedIn {
        session: Session,
        set_cookie: Option<String>,
    },
    SignedOut,
}

/// The visitor of a request: their session (unless it was signed out), refreshed first when
/// its token has expired.
pub async fn visitor(web: &Web, store: &Store, headers: &HeaderMap) -> Visitor {
    let Some(session) = cookie(headers, SESSION_COOKIE)
        .and_then(|raw| web.sealer.open::<Session>(SESSION_COOKIE, raw))
    else {
        return Visitor::SignedOut;
    };
    let now = now_s();
    if now - session.created_at > SESSION_MAX_AGE_S {
        return Visitor::SignedOut;
    }
    match store.session_ended(&session.id).await {
        Ok(false) => {}
        Ok(true) => return Visitor::SignedOut,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether a session was signed out");
            return Visitor::SignedOut;
        }
    }
    if session.access_expires_at - REFRESH_MARGIN_S > now {
        return Visitor::SignedIn {
            session,
            set_cookie: None,
        };
    }
    match renew(web, store, session).await {
        Some((session, cookie)) => Visitor::SignedIn {
            session,
            set_cookie: Some(cookie),
        },
        None => Visitor::SignedOut,
    }
}

/// The session with a new user-to-server token, and its cookie; `None` when GitHub will not
/// refresh it (the person signs in again). Used when the token expires, and when GitHub
/// refuses it earlier (revoked, or expired sooner than it said).
pub async fn renew(web: &Web, store: &Store, mut session: Session) -> Option<(Session, String)> {
    let refresh_token = session.refresh_token.clone()?;
    let tokens = match refresh(web, store, &refresh_token).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(login = %session.login, error = %e, "the session's token could not be refreshed: signed out");
            return None;
        }
    };
    session.access_token = tokens.access_token;
    session.access_expires_at = tokens.expires_at;
    session.refresh_token = tokens.refresh_token.or(Some(refresh_token));
    let sealed = web.sealer.seal(SESSION_COOKIE, &session);
    let cookie = web
        .sealer
        .set_cookie(SESSION_COOKIE, &sealed, SESSION_MAX_AGE_S);
    Some((session, cookie))
}

/// The name of the sealed value of a shared refresh.
const REFRESH_RECORD: &str = "spokehub_refresh";
/// How long a refresh that lost the race waits for the winner's record.
const RACE_WAIT: Duration = Duration::from_secs(2);

/// One refresh per refresh token, across replicas: concurrent requests of one person (the page
/// and its live updates, on any replica) share the first one's new tokens through the ledger,
/// sealed, for a minute. GitHub's refresh tokens work once.
async fn refresh(
    web: &Web,
    store: &Store,
    refresh_token: &str,
) -> Result<UserTokens, WebGitHubError> {
    let key = hex::encode(Sha256::digest(refresh_token.as_bytes()));
    let shared = || async {
        let since = crate::store::now_ms() - REFRESH_REUSE.as_millis() as i64;
        let sealed = store.refreshed(&key, since).await.ok().flatten()?;
        web.sealer.open::<UserTokens>(REFRESH_RECORD, &sealed)
    };
    // One refresh at a time in this replica; the ledger's record serves the rest.
    let _turn = web.refreshes.lock().await;
    if let Some(t) = shared().await {
        return Ok(t);
    }
    match web.github.refresh(refresh_token).await {
        Ok(t) => {
            let sealed = web.sealer.seal(REFRESH_RECORD, &t);
            if let Err(e) = store.record_refresh(&key, &sealed).await {
                tracing::warn!(error = %e, "cannot share a session's token refresh");
            }
            Ok(t)
        }
        // Another replica may have spent the token a moment ago: its record is the answer.
        Err(WebGitHubError::Refused(why)) => {
            let deadline = Instant::now() + RACE_WAIT;
            loop {
                if let Some(t) = shared().await {
                    return Ok(t);
                }
                if Instant::now() > deadline {
                    return Err(WebGitHubError::Refused(why));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(e) => Err(e),
    }
}

/// Where to go after signing in: a path of this hub only (never `//host` or a URL).
fn local_path(p: Option<&str>) -> String {
    match p {
        // Printable ASCII only: browsers drop tabs and newlines from URLs, so `/\t/evil`
        // would become `//evil`.
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            p.to_owned()
        }
        _ => "/runs".to_owned(),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// `GET /auth/login`: to GitHub's authorize page, with a fresh `state` in a sealed cookie.
pub async fn login(Extension(web): Extension<WebState>, Query(q): Query<LoginQuery>) -> Response {
    let Some(web) = web.0 else {
        return page_off();
    };
    let sign_in = SignIn {
        state: random_token(),
        return_to: local_path(q.return_to.as_deref()),
        created_at: now_s(),
    };
    let url = web
        .github
        .authorize_url(&web.url("/auth/callback"), &sign_in.state);
    let sealed = web.sealer.seal(SIGN_IN_COOKIE, &sign_in);
    with_cookie(
        see_other(url.as_str()),
        Some(
            web.sealer
                .set_cookie(SIGN_IN_COOKIE, &sealed, SIGN_IN_MAX_AGE_S),
        ),
    )
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn refused(text: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        pages::message("Sign-in failed", text),
    )
}

/// `GET /auth/callback`: GitHub sends the person back with a code; the `state` must be the
/// one this browser was given.
pub async fn callback(
    Extension(web): Extension<WebState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(web) = web.0 else {
        return page_off();
    };
    if let Some(e) = q.error.as_deref() {
        return refused(&format!(
            "GitHub said: {e}. Sign in again from the run page."
        ));
    }
    let sign_in = cookie(&headers, SIGN_IN_COOKIE)
        .and_then(|raw| web.sealer.open::<SignIn>(SIGN_IN_COOKIE, raw))
        .filter(|s| now_s() - s.created_at <= SIGN_IN_MAX_AGE_S);
    let (Some(sign_in), Some(state), Some(code)) = (sign_in, q.state.as_deref(), q.code.as_deref())
    else {
        return refused(
            "This sign-in did not start in this browser, or took too long. Sign in again.",
        );
    };
    if !bool::from(sign_in.state.as_bytes().ct_eq(state.as_bytes())) {
        tracing::warn!("sign-in refused: the state does not match this browser's");
        return refused("This sign-in did not start in this browser. Sign in again.");
    }
    let tokens = match web
        .github
        .exchange_code(code, &web.url("/auth/callback"))
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in refused by GitHub");
            return refused(&e.to_string());
        }
    };
    let (login, user_id) = match web.github.user(&tokens.access_token).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the signed-in person");
            return refused(&e.to_string());
        }
    };
    tracing::info!(%login, "signed in with GitHub");
    let session = Session {
        id: random_token(),
        login,
        user_id,
        access_token: tokens.access_token,
        access_expires_at: tokens.expires_at,
        refresh_token: tokens.refresh_token,
        csrf: random_token(),
        created_at: now_s(),
    };
    let sealed = web.sealer.seal(SESSION_COOKIE, &session);
    let r = with_cookie(
        see_other(&sign_in.return_to),
        Some(web.sealer.clear_cookie(SIGN_IN_COOKIE)),
    );
    with_cookie(
        r,
        Some(
            web.sealer
                .set_cookie(SESSION_COOKIE, &sealed, SESSION_MAX_AGE_S),
        ),
    )
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// A form post is the person's own: its token is the session's, and a browser's `Origin`,
/// when sent, is this hub's.
pub fn csrf_ok(web: &Web, session: &Session, form: &CsrfForm, headers: &HeaderMap) -> bool {
    let token_ok: bool = form.csrf.as_bytes().ct_eq(session.csrf.as_bytes()).into();
    let origin_ok = match headers.get("origin").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(o) => o == web.origin(),
    };
    token_ok && origin_ok && !form.csrf.is_empty()
}

/// `POST /auth/logout`
pub async fn logout(
    State(engine): State<Engine>,
    Extension(web): Extension<WebState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(web) = web.0 else {
        return page_off();
    };
    if let Visitor::SignedIn { session, .. } = visitor(&web, engine.store(), &headers).await {
        if !csrf_ok(&web, &session, &form, &headers) {
            return html(
                StatusCode::FORBIDDEN,
                pages::message("Refused", "This form did not come from this page."),
            );
        }
        // A copy of the cookie must not outlive the sign-out.
        let until = (session.created_at + SESSION_MAX_AGE_S) * 1000;
        if let Err(e) = engine.store().end_session(&session.id, until).await {
            tracing::error!(error = %e, "cannot record a sign-out");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message(
                    "Try again",
                    "The sign-out could not be recorded. Try again.",
                ),
            );
        }
        web.github.forget(session.user_id);
        tracing::info!(login = %session.login, "signed out");
    }
    with_cookie(
        html(
            StatusCode::OK,
            pages::layout(
                "Signed out · spokehub",
                None,
                "<h1>Signed out</h1><p><a href=\"/auth/login\" id=\"sign-in\">Sign in with GitHub</a></p>",
                None,
            ),
        ),
        Some(web.sealer.clear_cookie(SESSION_COOKIE)),
    )
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(local_path(Some("/runs/abc?x=1")), "/runs/abc?x=1");
        for bad in [
            "//evil.example/x",
            "https://evil.example",
            "/\\evil.example",
            "",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/\r\n/evil",
        ] {
            assert_eq!(local_path(Some(bad)), "/runs", "{bad}");
        }
        assert_eq!(local_path(None), "/runs");
    }
}
