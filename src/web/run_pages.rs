//! The handlers of `/runs` and `/runs/{id}`: who may see what (GitHub decides, with the
//! person's token), the live part of the page (server-sent events while the run is active)
//! and its buttons.

use std::convert::Infallible;
use std::hash::{Hash as _, Hasher as _};
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use super::auth::{csrf_ok, visitor, CsrfForm, Visitor};
use super::github::{Access, WebGitHubError};
use super::pages::{self, RunView, SpokeFilter, Viewer};
use super::session::Session;
use super::{html, page_off, see_other, with_cookie, Web, WebState};
use crate::engine::Engine;
use crate::hub::{HubRunId, RunStatus, Spoke, SpokeStatus, Totals};
use crate::store::RunRecord;

/// How often the live stream looks for changes.
const LIVE_EVERY: Duration = Duration::from_millis(500);
/// A live stream ends after this long (the browser reconnects), within the connection's
/// lifetime.
const LIVE_FOR: Duration = Duration::from_secs(45);

/// Why a page cannot be shown.
enum Denied {
    /// Not signed in: to the sign-in, then back here.
    SignIn,
    /// Unknown run, or GitHub does not show the person its hub repository: the same 404.
    NotFound(Box<Session>),
    /// GitHub or the ledger did not answer.
    Unavailable(String),
}

/// A refusal, with the session cookie to hand back when its token was refreshed on the way
/// (refresh tokens are single-use: a dropped cookie would sign the person out later).
struct Refusal {
    why: Denied,
    set_cookie: Option<String>,
}

impl Refusal {
    fn new(why: Denied, set_cookie: Option<String>) -> Refusal {
        Refusal { why, set_cookie }
    }
}

fn denied_page(r: Refusal, return_to: &str) -> Response {
    let page = match r.why {
        Denied::SignIn => {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("return_to", return_to)
                .finish();
            see_other(&format!("/auth/login?{q}"))
        }
        Denied::NotFound(s) => html(
            StatusCode::NOT_FOUND,
            pages::not_found(Some(&Viewer {
                login: &s.login,
                csrf: &s.csrf,
            })),
        ),
        Denied::Unavailable(why) => {
            tracing::warn!(error = %why, "the run page cannot be shown");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message(
                    "Try again",
                    "GitHub or the hub's database did not answer. Reload in a moment.",
                ),
            )
        }
    };
    with_cookie(page, r.set_cookie)
}

/// For requests made by the page's script: plain statuses, no redirects.
fn denied_status(r: Refusal) -> Response {
    let status = match r.why {
        Denied::SignIn => StatusCode::UNAUTHORIZED,
        Denied::NotFound(_) => StatusCode::NOT_FOUND,
        Denied::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    with_cookie(status.into_response(), r.set_cookie)
}

fn from_github(e: WebGitHubError, session: Session) -> Denied {
    match e {
        WebGitHubError::SignedOut => Denied::SignIn,
        WebGitHubError::Refused(_) => Denied::NotFound(Box::new(session)),
        WebGitHubError::Unavailable(why) => Denied::Unavailable(why),
    }
}

/// A run the signed-in person may see, with what they may do.
struct Allowed {
    session: Session,
    set_cookie: Option<String>,
    run: RunRecord,
    access: Access,
}

/// What GitHub lets the person do with `repo`; a token GitHub refuses before its time is
/// refreshed once. The session (perhaps refreshed) comes back with the answer.
async fn access_to(
    web: &Web,
    store: &crate::store::Store,
    session: Session,
    set_cookie: Option<String>,
    repo: &crate::hub::RepoName,
) -> Result<(Access, Session, Option<String>), Refusal> {
    match web
        .github
        .access(session.user_id, &session.access_token, repo)
        .await
    {
        Ok(a) => Ok((a, session, set_cookie)),
        Err(WebGitHubError::SignedOut) => {
            let Some((session, cookie)) = super::auth::renew(web, store, session).await else {
                return Err(Refusal::new(Denied::SignIn, None));
            };
            match web
                .github
                .access(session.user_id, &session.access_token, repo)
                .await
            {
                Ok(a) => Ok((a, session, Some(cookie))),
                Err(e) => Err(Refusal::new(from_github(e, session), Some(cookie))),
            }
        }
        Err(e) => Err(Refusal::new(from_github(e, session), set_cookie)),
    }
}

async fn allowed(
    engine: &Engine,
    web: &Web,
    headers: &HeaderMap,
    id: &str,
) -> Result<Allowed, Refusal> {
    let Visitor::SignedIn {
        mut session,
        mut set_cookie,
    } = visitor(web, engine.store(), headers).await
    else {
        return Err(Refusal::new(Denied::SignIn, None));
    };
    // Ask GitHub about the configured hub repositories before looking the run up, so an
    // unknown id and a hidden run take the same path (their timing tells nothing either).
    let mut sees_a_hub = false;
    for hub in &engine.config().access.repositories {
        let (a, s, c) = access_to(web, engine.store(), session, set_cookie, hub).await?;
        (session, set_cookie) = (s, c);
        sees_a_hub |= a != Access::None;
    }
    let not_found = |session: Session, set_cookie: Option<String>| {
        Refusal::new(Denied::NotFound(Box::new(session)), set_cookie)
    };
    if !sees_a_hub {
        return Err(not_found(session, set_cookie));
    }
    let Ok(id) = id.parse::<HubRunId>() else {
        return Err(not_found(session, set_cookie));
    };
    let run = match engine.store().run(&id).await {
        Ok(Some(run)) => run,
        Ok(None) => return Err(not_found(session, set_cookie)),
        Err(e) => return Err(Refusal::new(Denied::Unavailable(e.to_string()), set_cookie)),
    };
    let (access, session, set_cookie) =
        access_to(web, engine.store(), session, set_cookie, &run.hub_repo).await?;
    if access == Access::None {
        return Err(not_found(session, set_cookie));
    }
    Ok(Allowed {
        session,
        set_cookie,
        run,
        access,
    })
}

#[derive(Deserialize, Default)]
pub struct FilterQuery {
    problems: Option<String>,
    state: Option<String>,
    q: Option<String>,
    page: Option<usize>,
}

impl FilterQuery {
    fn filter(&self) -> SpokeFilter {
        SpokeFilter {
            problems_only: self.problems.as_deref().is_some_and(|v| !v.is_empty()),
            state: self
                .state
                .as_deref()
                .and_then(|s| s.parse::<SpokeStatus>().ok()),
            search: self
                .q
                .as_deref()
                .unwrap_or("")
                .trim()
                .chars()
                .take(100)
                .collect(),
            page: self.page.unwrap_or(1).clamp(1, 1_000_000),
        }
    }
}

/// Renders the run's page (`whole`) or its live part.
async fn render(
    engine: &Engine,
    web: &Web,
    a: &Allowed,
    q: &FilterQuery,
    whole: bool,
) -> Result<String, Denied> {
    let unavailable = |e: crate::store::StoreError| Denied::Unavailable(e.to_string());
    let spokes: Vec<Spoke> = engine
        .store()
        .spokes(&a.run.id)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|r| r.spoke)
        .collect();
    let (events_total, events) = engine
        .store()
        .run_events_newest(&a.run.id, pages::EVENTS_SHOWN as i64)
        .await
        .map_err(unavailable)?;
    let totals = Totals::of(&spokes);
    let filter = q.filter();
    let view = RunView {
        run: &a.run,
        totals: &totals,
        spokes: &spokes,
        events: &events,
        events_total: events_total as usize,
        filter: &filter,
        can_act: a.access == Access::Write,
        web_url: &web.web_url,
    };
    let viewer = Viewer {
        login: &a.session.login,
        csrf: &a.session.csrf,
    };
    Ok(if whole {
        pages::run_page(&view, &viewer)
    } else {
        pages::run_live(&view, &viewer)
    })
}

/// This request's path and query: where to come back after signing in.
fn here(uri: &axum::http::Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/runs".into())
}

/// `GET /runs/{id}`
pub async fn page(
    State(engine): State<Engine>,
    Extension(web): Extension<WebState>,
    Path(id): Path<String>,
    Query(q): Query<FilterQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(web) = web.0 else {
        return page_off();
    };
    let here = here(&uri);
    let a = match allowed(&engine, &web, &headers, &id).await {
        Ok(a) => a,
        Err(d) => return denied_page(d, &here),
    };
    match render(&engine, &web, &a, &q, true).await {
        Ok(body) => with_cookie(html(StatusCode::OK, body), a.set_cookie),
        Err(d) => denied_page(Refusal::new(d, a.set_cookie), &here),
    }
}

/// `GET /runs/{id}/fragment`: the live part of the page, for its script.
pub async fn fragment(
    State(engine): State<Engine>,
    Extension(web): Extension<WebState>,
    Path(id): Path<String>,
    Query(q): Query<FilterQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(web) = web.0 else {
        return page_off();
    };
    let a = match allowed(&engine, &web, &headers, &id).await {
        Ok(a) => a,
        Err(d) => return denied_status(d),
    };
    match render(&engine, &web, &a, &q, false).await {
        Ok(body) => with_cookie(html(StatusCode::OK, body), a.set_cookie),
        Err(d) => denied_status(Refusal::new(d, a.set_cookie)),
    }
}

/// What changes on the page: the run's own state and the spokes' fingerprint.
fn fingerprint(run: &RunRecord, spokes: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    run.status.as_str().hash(&mut h);
    run.conclusion.hash(&mut h);
    run.cancel_requested.hash(&mut h);
    run.check_run_id.hash(&mut h);
    spokes.hash(&mut h);
    h.finish()
}

/// `GET /runs/{id}/live`: server-sent events, `change` whenever the run or a spoke changes,
/// `done` when it completes.
pub async fn live(
    State(engine): State<Engine>,
    Extension(web): Extension<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(web) = web.0 else {
        return page_off();
    };
    let a = match allowed(&engine, &web, &headers, &id).await {
        Ok(a) => a,
        Err(d) => return denied_status(d),
    };
    let run_id = a.run.id;
    let started = tokio::time::Instant::now();
    let stream = futures::stream::unfold(
        (engine, None::<u64>, false),
        move |(engine, last, ended)| async move {
            if ended || started.elapsed() > LIVE_FOR {
                return None;
            }
            loop {
                if last.is_some() {
                    tokio::time::sleep(LIVE_EVERY).await;
                }
                if started.elapsed() > LIVE_FOR {
                    return None;
                }
                let run = engine.store().run(&run_id).await.ok().flatten()?;
                let spokes = engine.store().spokes_fingerprint(&run_id).await.ok()?;
                let fp = fingerprint(&run, &spokes);
                let done = run.status == RunStatus::Completed;
                if done {
                    let e = Event::default().event("done").data(fp.to_string());
                    return Some((Ok::<_, Infallible>(e), (engine, Some(fp), true)));
                }
                if last != Some(fp) {
                    let kind = if last.is_none() { "hello" } else { "change" };
                    let e = Event::default().event(kind).data(fp.to_string());
                    return Some((Ok(e), (engine, Some(fp), false)));
                }
            }
        },
    );
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    super::secure_headers(r.headers_mut());
    with_cookie(r, a.set_cookie)
}

#[derive(Deserialize)]
pub struct ListQuery {
    active: Option<String>,
    task: Option<String>,
}

/// `GET /runs`: the recent runs of the hub repositories the person can read.
pub async fn list(
    State(engine): State<Engine>,
    Extension(web): Extension<WebState>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(web) = web.0 else {
        return page_off();
    };
    let here = here(&uri);
    let Visitor::SignedIn {
        mut session,
        mut set_cookie,
    } = visitor(&web, engine.store(), &headers).await
    else {
        return denied_page(Refusal::new(Denied::SignIn, None), &here);
    };
    let active_only = q.active.as_deref().is_some_and(|v| !v.is_empty());
    let runs = match engine
        .store()
        .recent_runs(
            active_only,
            q.task.as_deref().filter(|t| !t.is_empty()),
            200,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return denied_page(
                Refusal::new(Denied::Unavailable(e.to_string()), set_cookie),
                &here,
            )
        }
    };
    let mut seen: std::collections::HashMap<String, Access> = Default::default();
    let mut visible = Vec::new();
    for run in runs {
        let key = run.hub_repo.as_str().to_ascii_lowercase();
        let access = match seen.get(&key) {
            Some(a) => *a,
            None => match access_to(&web, engine.store(), session, set_cookie, &run.hub_repo).await
            {
                Ok((a, s, c)) => {
                    (session, set_cookie) = (s, c);
                    seen.insert(key, a);
                    a
                }
                Err(r) => return denied_page(r, &here),
            },
        };
        if access != Access::None {
            visible.push(run);
        }
    }
    let viewer = Viewer {
        login: &session.login,
        csrf: &session.csrf,
    };
    with_cookie(
        html(
            StatusCode::OK,
            pages::runs_list(&visible, &viewer, active_only),
        ),
        set_cookie,
    )
}

/// Checks a button's post: signed in, may see the run, may push to its hub repository, and
/// the form is the page's own.
async fn button(
    engine: &Engine,
    web: &Web,
    headers: &HeaderMap,
    id: &str,
    form: &CsrfForm,
) -> Result<Allowed, Response> {
    let a = allowed(engine, web, headers, id)
        .await
        .map_err(|d| denied_page(d, &format!("/runs/{id}")))?;
    if !csrf_ok(web, &a.session, form, headers) {
        tracing::warn!(login = %a.session.login, "a run-page form without this session's token refused");
        let page = html(
            StatusCode::FORBIDDEN,
            pages::message(
                "Refused",
                "This form did not come from this page. Reload it and try again.",
            ),
        );
        return Err(with_cookie(page, a.set_cookie));
    }
    if a.access != Access::Write {
        let page = html(
            StatusCode::FORBIDDEN,
            pages::message(
                "Not allowed",
                "Cancelling and re-running need write access to the hub repository.",
            ),
        );
        return Err(with_cookie(page, a.set_cookie));
    }
    Ok(a)
}

/// The run page's buttons.
#[derive(Clone, Copy)]
enum Button {
    Cancel,
    RerunFailed,
}

/// Presses a button for the signed-in person, then back to the page with its filter.
async fn press(
    engine: &Engine,
    web: &Web,
    (id, q, headers, form): (&str, &FilterQuery, &HeaderMap, &CsrfForm),
    which: Button,
) -> Response {
    let a = match button(engine, web, headers, id, form).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let done = match which {
        Button::Cancel => {
            let by = format!("{} on the run page", a.session.login);
            engine.cancel_run(&a.run.id, &by).await.map(|_| ())
        }
        Button::RerunFailed => engine
            .rerun_failed_by(&a.run.id, &a.session.login)
            .await
            .map(|_| ()),
    };
    if let Err(e) = done {
        let why = Denied::Unavailable(format!("{e:#}"));
        return denied_page(Refusal::new(why, a.set_cookie), "/runs");
    }
    with_cookie(see_other(&back_to(&a.run, q)), a.set_cookie)
}

/// `POST /runs/{id}/cancel`
pub async fn cancel(
    State(engine): State<Engine>,
    Extension(web): Extension<WebState>,
    Path(id): Path<String>,
    Query(q): Query<FilterQuery>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    match web.0 {
        Some(web) => press(&engine, &web, (&id, &q, &headers, &form), Button::Cancel).await,
        None => page_off(),
    }
}

/// `POST /runs/{id}/rerun-failed`
pub async fn rerun_failed(
    State(engine): State<Engine>,
    Extension(web): Extension<WebState>,
    Path(id): Path<String>,
    Query(q): Query<FilterQuery>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    match web.0 {
        Some(web) => {
            press(
                &engine,
                &web,
                (&id, &q, &headers, &form),
                Button::RerunFailed,
            )
            .await
        }
        None => page_off(),
    }
}

/// The run's page with the filter the button was pressed under.
fn back_to(run: &RunRecord, q: &FilterQuery) -> String {
    let f = q.filter();
    let query = f.query(f.page);
    if query.is_empty() {
        format!("/runs/{}", run.id)
    } else {
        format!("/runs/{}?{query}", run.id)
    }
}
