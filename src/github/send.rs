//! The one place every installation request goes through: rate governor, retries of
//! idempotent requests on transient failures, never a blind resend of a POST that creates
//! something, pagination by path, and a debug event per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use octocrab::Octocrab;
use rand::Rng;
use serde_json::Value;

use super::app::Settings;
use super::error::{describe, from_status, never_connected, ApiError};
use super::governor::{Governor, RateInfo, Verdict};
use super::shared_rate::WriteTurn;

/// Refresh an installation token this long before it expires, one mint at a time.
const TOKEN_REFRESH_MARGIN_SECS: i64 = 60;
/// Added to a pause shared with other replicas: their clocks and timers are not this one's.
const SHARED_PAUSE_MARGIN: Duration = Duration::from_millis(250);
/// Safety bound on pagination.
const MAX_PAGES: usize = 10_000;

/// Counters of one installation client (for benchmarks and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests handed to the HTTP stack (a 401 re-mint-and-resend inside octocrab counts once).
    pub requests: u64,
    /// Resends after a 5xx or transport failure.
    pub retries: u64,
    /// Responses rejected by a rate limit (each one paused the installation, then resent).
    pub rate_limit_waits: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limit_waits: AtomicU64,
}

/// Whether a request may be sent again after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// GET, PATCH of a check run, cancel: retried with backoff.
    Safe,
    /// A POST that creates something: never resent after it may have reached GitHub.
    Never,
}

/// A response with a non-rate-limited, non-5xx status.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// A request that did not produce a [`Reply`].
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: ApiError,
    /// The request may have reached GitHub and had its effect (5xx, timeout, dropped connection).
    pub maybe_applied: bool,
}

/// The HTTP side of one installation.
pub(crate) struct Conn {
    crab: Octocrab,
    settings: Arc<Settings>,
    governor: Governor,
    counters: Counters,
    /// The installation (else App JWT auth): its tokens are refreshed single-flight.
    installation: Option<u64>,
    refresh: tokio::sync::Mutex<()>,
    /// Writes (POST, PATCH) go out one at a time, as GitHub asks of bulk writers: concurrent
    /// writes are what trips secondary rate limits, and a write already on its way when the
    /// limit hits would land while the installation is told to wait.
    writes: tokio::sync::Mutex<()>,
}

impl Conn {
    /// `installation`: the installation the client authenticates as (none: as the App).
    pub fn new(crab: Octocrab, settings: Arc<Settings>, installation: Option<u64>) -> Self {
        let governor = Governor::new(settings.governor.clone());
        Self {
            crab,
            settings,
            governor,
            counters: Counters::default(),
            installation,
            refresh: tokio::sync::Mutex::new(()),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Make sure the cached installation token stays valid for a while, minting at most one
    /// at a time (octocrab would otherwise mint one per request that finds it expired).
    async fn fresh_token(&self) -> Result<(), Failure> {
        if self.installation.is_none() {
            return Ok(());
        }
        let _one_at_a_time = self.refresh.lock().await;
        self.crab
            .installation_token_with_buffer(chrono::Duration::seconds(TOKEN_REFRESH_MARGIN_SECS))
            .await
            .map(drop)
            .map_err(|e| Failure {
                error: super::app::octo_error(&e, "POST /app/installations/{id}/access_tokens"),
                maybe_applied: false,
            })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            rate_limit_waits: self.counters.rate_limit_waits.load(Ordering::Relaxed),
        }
    }

    /// Send one request (`path` is path and query, relative to the API root).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        resend: Resend,
    ) -> Result<Reply, Failure> {
        let mut tries = 0u32;
        let mut rate_rounds = 0u32;
        loop {
            let one_write_at_a_time = match method {
                Method::GET => None,
                _ => Some(self.writes.lock().await),
            };
            // Across replicas: the installation's write turn, and the wait GitHub asked for.
            let shared_turn = match self.shared_wait(one_write_at_a_time.is_some()).await {
                Ok(turn) => turn,
                Err(failure) => {
                    tries += 1;
                    if tries >= self.settings.max_attempts {
                        return Err(failure);
                    }
                    drop(one_write_at_a_time);
                    tokio::time::sleep(self.backoff(tries)).await;
                    continue;
                }
            };
            let permit = self.governor.acquire().await;
            if let Err(failure) = self.fresh_token().await {
                // Nothing was sent: any request may try again if the mint failed transiently.
                drop(permit);
                tries += 1;
                if !failure.error.is_transient() || tries >= self.settings.max_attempts {
                    return Err(failure);
                }
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                drop(one_write_at_a_time);
                tokio::time::sleep(self.backoff(tries)).await;
                continue;
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let start = Instant::now();
            let outcome = tokio::time::timeout(
                self.settings.request_timeout,
                self.once(&method, path, body),
            )
            .await;
            drop(permit);
            let elapsed_ms = start.elapsed().as_millis() as u64;
            let failure = match outcome {
                Err(_) => {
                    tracing::debug!(%method, route = path, elapsed_ms, "github request timed out");
                    Failure {
                        error: ApiError::Transport {
                            detail: format!("no answer within {:?}", self.settings.request_timeout),
                        },
                        maybe_applied: true,
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%method, route = path, elapsed_ms, error = %describe(&e), "github request failed");
                    Failure {
                        maybe_applied: !never_connected(&e),
                        error: ApiError::Transport {
                            detail: describe(&e),
                        },
                    }
                }
                Ok(Ok(reply)) => {
                    tracing::debug!(%method, route = path, status = reply.status, elapsed_ms, "github request");
                    let status = http::StatusCode::from_u16(reply.status)
                        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                    let info = RateInfo::from_response(status, &reply.headers, &reply.body);
                    self.count(&method, path, &reply, &info);
                    let verdict = self.governor.observe(&info, Instant::now(), epoch_now());
                    self.share_pause().await;
                    if let Verdict::Limited { pause } = verdict {
                        // A rate-limited request had no effect: wait out the pause, send again.
                        self.counters
                            .rate_limit_waits
                            .fetch_add(1, Ordering::Relaxed);
                        rate_rounds += 1;
                        tracing::debug!(%method, route = path, pause_ms = pause.as_millis() as u64, "github rate limit");
                        if rate_rounds >= self.settings.max_rate_limit_rounds {
                            return Err(Failure {
                                error: ApiError::RateLimited {
                                    retry_after: Some(pause),
                                },
                                maybe_applied: false,
                            });
                        }
                        continue;
                    }
                    if reply.status < 500 {
                        return Ok(reply);
                    }
                    Failure {
                        error: ApiError::Server {
                            status: reply.status,
                        },
                        maybe_applied: true,
                    }
                }
            };
            let may_resend = resend == Resend::Safe || !failure.maybe_applied;
            tries += 1;
            if !may_resend || tries >= self.settings.max_attempts {
                return Err(failure);
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            drop(one_write_at_a_time);
            drop(shared_turn);
            tokio::time::sleep(self.backoff(tries)).await;
        }
    }

    /// With a shared rate ledger: takes the installation's write turn (for a write) and waits
    /// out any pause another replica recorded. `Err` when the ledger cannot be reached (nothing
    /// was sent; the request may be tried again).
    async fn shared_wait(&self, write: bool) -> Result<Option<WriteTurn>, Failure> {
        let (Some(shared), Some(installation)) = (&self.settings.shared_rate, self.installation)
        else {
            return Ok(None);
        };
        let unreachable = |e: anyhow::Error| Failure {
            error: ApiError::Transport {
                detail: format!("the shared rate ledger is unavailable: {e:#}"),
            },
            maybe_applied: false,
        };
        // Any pause is waited out without holding the turn (other replicas' writers wait for
        // the turn on database connections); the turn is then taken and the pause read again
        // under it, which is the read that counts.
        loop {
            let until = shared
                .0
                .paused_until(installation)
                .await
                .map_err(unreachable)?;
            self.wait_until(until).await;
            if !write {
                return Ok(None);
            }
            let turn = shared
                .0
                .write_turn(installation)
                .await
                .map_err(unreachable)?;
            let paused = turn
                .paused_until
                .is_some_and(|u| u > chrono::Utc::now().timestamp_millis());
            if !paused {
                return Ok(Some(turn));
            }
        }
    }

    /// Sleeps until `until` (unix ms) when it is in the future: a pause another replica
    /// recorded.
    async fn wait_until(&self, until: Option<i64>) {
        let Some(until) = until else {
            return;
        };
        let wait = until - chrono::Utc::now().timestamp_millis();
        if wait > 0 {
            self.counters
                .rate_limit_waits
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                wait_ms = wait,
                "waiting out a rate-limit pause another replica saw"
            );
            if let Some(t) = &self.settings.telemetry {
                t.github_wait("shared");
            }
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }

    /// Counts a request, GitHub's remaining budget and a rate-limit rejection.
    fn count(&self, method: &Method, path: &str, reply: &Reply, info: &RateInfo) {
        let Some(t) = &self.settings.telemetry else {
            return;
        };
        t.github_request(method.as_str(), path, reply.status);
        if let Some(remaining) = info.remaining {
            let resource = reply
                .headers
                .get("x-ratelimit-resource")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("core");
            let limit = reply
                .headers
                .get("x-ratelimit-limit")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            t.github_budget(self.installation, resource, remaining, limit);
        }
        if info.is_rate_limited() {
            let reason = if info.remaining == Some(0) {
                "primary"
            } else {
                "secondary"
            };
            t.github_wait(reason);
        }
    }

    /// Records this installation's pause (if the governor holds one) for every replica.
    async fn share_pause(&self) {
        let (Some(shared), Some(installation)) = (&self.settings.shared_rate, self.installation)
        else {
            return;
        };
        if let Some(pause) = self.governor.pause_remaining(Instant::now()) {
            // Rounded up, with a margin: other replicas read it with their own clocks.
            let until = chrono::Utc::now().timestamp_millis()
                + pause.as_millis() as i64
                + 1
                + SHARED_PAUSE_MARGIN.as_millis() as i64;
            if let Err(e) = shared.0.pause(installation, until).await {
                tracing::warn!(error = format!("{e:#}"), "cannot share a rate-limit pause");
            }
        }
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, octocrab::Error> {
        let builder = http::Request::builder().method(method.clone()).uri(path);
        let mut request = self.crab.build_request(builder, body)?;
        // octocrab's `build_request` stamps `X-GitHub-Api-Version: 2022-11-28` (from its Cargo
        // metadata) and the client's extra header (`GitHubApp::new`) adds ours after it: drop
        // the first so exactly one goes out.
        request.headers_mut().remove("x-github-api-version");
        let resp = self.crab.execute(request).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = self.crab.body_to_string(resp).await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Exponential backoff with jitter: base x 2^(try-1), plus up to 50 %.
    fn backoff(&self, tries: u32) -> Duration {
        let base = self
            .settings
            .retry_base_delay
            .saturating_mul(1 << (tries - 1).min(10));
        let jitter = rand::thread_rng().gen_range(0.0..0.5);
        base + base.mul_f64(jitter)
    }

    /// GET and expect 2xx; other statuses become errors.
    pub async fn get_ok(&self, path: &str) -> Result<Reply, ApiError> {
        let reply = self
            .send(Method::GET, path, None, Resend::Safe)
            .await
            .map_err(|f| f.error)?;
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            Err(from_status(reply.status, &route_of(path), &reply.body))
        }
    }

    /// Every page of a listing, following `Link: rel="next"` by path. Each page is handed to
    /// `visit` as it arrives and then dropped, so a 10,000-repository listing never holds all
    /// of its JSON at once.
    pub async fn for_each_page(
        &self,
        first: &str,
        mut visit: impl FnMut(&Reply) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let mut next = Some(first.to_owned());
        let mut pages = 0;
        while let Some(path) = next.take() {
            if pages >= MAX_PAGES {
                return Err(ApiError::Decode {
                    detail: format!("more than {MAX_PAGES} pages at {}", route_of(first)),
                });
            }
            let reply = self.get_ok(&path).await?;
            pages += 1;
            next = next_page_path(&reply.headers).filter(|n| *n != path);
            visit(&reply)?;
        }
        Ok(())
    }
}

/// The path without its query (for messages and logs).
pub(crate) fn route_of(path: &str) -> String {
    path.split('?').next().unwrap_or(path).to_owned()
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The path and query of the `rel="next"` link, if any.
pub(crate) fn next_page_path(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(http::header::LINK)?.to_str().ok()?;
    for part in link.split(',') {
        let mut pieces = part.split(';');
        let target = pieces
            .next()?
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        if pieces.any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\"")) {
            if target.starts_with('/') {
                return Some(target.to_owned());
            }
            let url = url::Url::parse(target).ok()?;
            return Some(match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            });
        }
    }
    None
}
