//! Per-installation rate governor: a concurrency cap plus a shared pause that every request
//! waits out before it is sent. Responses are fed back through [`Governor::observe`], which
//! applies GitHub's rule: honour `retry-after`; else if `x-ratelimit-remaining` is 0 wait for
//! `x-ratelimit-reset`; else wait at least a minute, backing off exponentially.
//!
//! Time is passed in explicitly (`now`, `now_epoch`) so the rules are unit-tested with a fake
//! clock; only [`Governor::acquire`] reads the real clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Tuning of a [`Governor`].
#[derive(Debug, Clone)]
pub struct GovernorConfig {
    /// Requests in flight at once for one installation (GitHub allows ~100 concurrent).
    pub max_in_flight: usize,
    /// First pause on a secondary rate limit without `retry-after` (GitHub: at least 60 s).
    pub min_backoff: Duration,
    /// Upper bound of any single pause.
    pub max_pause: Duration,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 50,
            min_backoff: Duration::from_secs(60),
            max_pause: Duration::from_secs(60 * 60),
        }
    }
}

/// The rate-limit facts of one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset`, epoch seconds.
    pub reset_epoch: Option<u64>,
    /// The error message names a (secondary) rate limit.
    pub message_says_rate_limit: bool,
}

impl RateInfo {
    /// Read the headers (and, for 403/429, the error message) of a response.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &str) -> Self {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let limited_status = matches!(status.as_u16(), 403 | 429);
        Self {
            status: status.as_u16(),
            retry_after: num("retry-after").map(Duration::from_secs),
            remaining: num("x-ratelimit-remaining"),
            reset_epoch: num("x-ratelimit-reset"),
            message_says_rate_limit: limited_status
                && body.to_ascii_lowercase().contains("rate limit"),
        }
    }

    /// A 403/429 that GitHub sent because of a rate limit (so the request had no effect).
    pub fn is_rate_limited(&self) -> bool {
        match self.status {
            429 => true,
            403 => {
                self.message_says_rate_limit
                    || self.remaining == Some(0)
                    || self.retry_after.is_some()
            }
            _ => false,
        }
    }
}

/// What [`Governor::observe`] decided about a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not rate limited: hand the response to the caller.
    Pass,
    /// Rejected by a rate limit; the installation is paused this long, then resend.
    Limited { pause: Duration },
}

#[derive(Debug, Default)]
struct State {
    paused_until: Option<Instant>,
    /// Consecutive secondary-limit pauses without guidance, for exponential backoff.
    strikes: u32,
}

/// One per installation. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Governor {
    cfg: GovernorConfig,
    state: Mutex<State>,
    permits: Arc<Semaphore>,
}

impl Governor {
    pub fn new(cfg: GovernorConfig) -> Self {
        let permits = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        Self {
            cfg,
            state: Mutex::new(State::default()),
            permits,
        }
    }

    /// How long requests must still wait at `now` (None when not paused).
    pub fn pause_remaining(&self, now: Instant) -> Option<Duration> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.paused_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Wait while the installation is paused, then take one of the in-flight slots. Hold the
    /// returned permit until the response has been read.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        loop {
            while let Some(wait) = self.pause_remaining(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the governor never closes its semaphore");
            // A pause may have started while this task waited for a slot.
            if self.pause_remaining(Instant::now()).is_none() {
                return permit;
            }
        }
    }

    /// Feed one response back. `now` is the monotonic time, `now_epoch` the wall clock in
    /// epoch seconds (for `x-ratelimit-reset`).
    pub fn observe(&self, info: &RateInfo, now: Instant, now_epoch: u64) -> Verdict {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until_reset = || {
            info.reset_epoch
                .map(|r| Duration::from_secs(r.saturating_sub(now_epoch).max(1)))
        };
        if !info.is_rate_limited() {
            st.strikes = 0;
            // The quota is spent: hold further requests until it resets instead of hitting 403s.
            if info.remaining == Some(0) && (200..300).contains(&info.status) {
                if let Some(wait) = until_reset() {
                    Self::pause(&mut st, now, wait.min(self.cfg.max_pause));
                }
            }
            return Verdict::Pass;
        }
        let wait = if let Some(ra) = info.retry_after {
            ra
        } else if let (Some(0), Some(wait)) = (info.remaining, until_reset()) {
            wait
        } else {
            let factor = 2u32.saturating_pow(st.strikes.min(16));
            st.strikes = st.strikes.saturating_add(1);
            self.cfg.min_backoff.saturating_mul(factor)
        };
        let wait = wait.min(self.cfg.max_pause);
        Self::pause(&mut st, now, wait);
        Verdict::Limited { pause: wait }
    }

    fn pause(st: &mut State, now: Instant, wait: Duration) {
        let until = now + wait;
        if st.paused_until.is_none_or(|t| t < until) {
            st.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
#[path = "governor_tests.rs"]
mod tests;
