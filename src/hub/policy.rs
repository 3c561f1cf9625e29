//! Run policies: concurrency, retries, timeouts and the success threshold, with the TOML-facing
//! override table (`[policy]`, `[tasks.NAME.policy]`) they are built from.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// How a hub run behaves. Built from [`Policy::default`] plus [`PolicyOverrides`] via [`Policy::with`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How many spokes may be in flight (dispatching .. running: queued or running on GitHub)
    /// at once; at least 1; unlimited (`usize::MAX`) unless set. Argo's `parallelism`: a
    /// rolling restart sets it to 1.
    pub concurrency: usize,
    /// How many GitHub requests (dispatches, searches, read-backs) one run has in flight at
    /// once; at least 1.
    pub api_concurrency: usize,
    /// When the run as a whole counts as a success.
    pub success_threshold: SuccessThreshold,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    /// Whether a timed-out spoke's workflow run is cancelled on GitHub.
    pub cancel_on_timeout: bool,
    /// Whether another run of the same task may run at the same time.
    pub allow_parallel: bool,
    /// How long to wait before searching for a run whose dispatch answer was lost (GitHub indexes
    /// new runs with a delay).
    pub unknown_search_delay: Duration,
    /// A dispatched or running spoke with no news for this long is read back from GitHub
    /// (webhooks get lost and GitHub never redelivers on its own).
    pub reconcile_after: Duration,
    /// At most this many such read-backs per second per installation.
    pub reconcile_rate: u32,
    /// Pulled work (pull, hybrid): how long a worker's lease on an item lasts without a
    /// heartbeat; a worker that dies loses its item this long after its last heartbeat.
    pub work_lease: Duration,
    /// Hybrid: how many worker jobs one worker-workflow run starts (its matrix).
    pub workers: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            concurrency: usize::MAX,
            api_concurrency: 20,
            success_threshold: SuccessThreshold::All,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            cancel_on_timeout: false,
            allow_parallel: false,
            unknown_search_delay: Duration::from_secs(10),
            reconcile_after: Duration::from_secs(60),
            reconcile_rate: 10,
            work_lease: Duration::from_secs(60),
            workers: 20,
        }
    }
}

/// When a run succeeds, counted over its non-skipped spokes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SuccessThreshold {
    /// Every non-skipped spoke succeeded.
    All,
    /// At least one spoke succeeded.
    Any,
    /// `succeeded / non-skipped >= ratio`, ratio in `(0, 1]`.
    Ratio(f64),
}

impl fmt::Display for SuccessThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuccessThreshold::All => f.write_str("all"),
            SuccessThreshold::Any => f.write_str("any"),
            // Rounded so that 0.9 prints as "90%", not "90.00000000000001%".
            SuccessThreshold::Ratio(r) => write!(f, "{}%", (r * 1e8).round() / 1e6),
        }
    }
}

impl SuccessThreshold {
    /// Parses `"all"`, `"any"` or a percentage like `"90%"` / `"99.5%"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "all" => return Ok(SuccessThreshold::All),
            "any" => return Ok(SuccessThreshold::Any),
            _ => {}
        }
        let pct = t
            .strip_suffix('%')
            .ok_or_else(|| format!("expected \"all\", \"any\", \"N%\" or a ratio, got {t:?}"))?;
        let v: f64 = pct
            .trim()
            .parse()
            .map_err(|_| format!("invalid percentage {t:?}"))?;
        // Rounded so that "33.3%" is exactly 0.333, as a TOML 0.333 would be.
        Self::ratio((v * 1e6).round() / 1e8)
            .map_err(|_| format!("percentage {t:?} must be in (0%, 100%]"))
    }

    /// A ratio in `(0, 1]`.
    pub fn ratio(r: f64) -> Result<Self, String> {
        if r.is_finite() && r > 0.0 && r <= 1.0 {
            Ok(SuccessThreshold::Ratio(r))
        } else {
            Err(format!("ratio {r} must be in (0, 1]"))
        }
    }
}

/// Retries of failed or timed-out spokes: `limit` retries after the first attempt, waiting
/// `min(cap, backoff * factor^(n-1))` after attempt `n`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub limit: u32,
    pub backoff: Duration,
    pub factor: f64,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            limit: 2,
            backoff: Duration::from_secs(30),
            factor: 2.0,
            cap: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Whether attempt `attempt` (1-based) that just failed may be retried.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt <= self.limit
    }

    /// The wait after attempt `attempt` (1-based): `min(cap, backoff * factor^(attempt-1))`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let ms = self.backoff.as_millis() as f64 * self.factor.powi(exp);
        let cap = self.cap.as_millis() as f64;
        if !ms.is_finite() || ms >= cap {
            self.cap
        } else {
            Duration::from_millis(ms.max(0.0) as u64)
        }
    }
}

/// Spoke and run timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// From dispatch until the run starts.
    pub queued: Duration,
    /// From start until the run finishes.
    pub running: Duration,
    /// The whole hub run.
    pub overall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            queued: Duration::from_secs(15 * 60),
            running: Duration::from_secs(60 * 60),
            overall: Duration::from_secs(6 * 60 * 60),
        }
    }
}

/// A success threshold as written in TOML: a string (`"all"`, `"any"`, `"90%"`) or a number (`0.9`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ThresholdSpec {
    Text(String),
    Number(f64),
}

/// `[policy.retry]`: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    pub limit: Option<u32>,
    pub backoff: Option<String>,
    pub factor: Option<f64>,
    pub cap: Option<String>,
}

/// The `[policy]` table (and `[tasks.NAME.policy]`): every field optional; durations as strings
/// like `"30s"` or `"1h30m"`. Validated by [`Policy::with`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    pub concurrency: Option<usize>,
    pub api_concurrency: Option<usize>,
    pub success_threshold: Option<ThresholdSpec>,
    pub retry: Option<RetryOverrides>,
    pub queued_timeout: Option<String>,
    pub running_timeout: Option<String>,
    pub overall_timeout: Option<String>,
    pub cancel_on_timeout: Option<bool>,
    pub allow_parallel: Option<bool>,
    pub unknown_search_delay: Option<String>,
    pub reconcile_after: Option<String>,
    pub reconcile_rate: Option<u32>,
    pub work_lease: Option<String>,
    pub workers: Option<usize>,
}

/// A policy value that is not acceptable; `field` is its TOML key (e.g. `retry.factor`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy.{field}: {message}")]
pub struct PolicyError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field,
        message: message.into(),
    }
}

fn dur(field: &'static str, v: &Option<String>, into: &mut Duration) -> Result<(), PolicyError> {
    if let Some(s) = v {
        *into = parse_duration(s).map_err(|e| err(field, e.to_string()))?;
    }
    Ok(())
}

impl Policy {
    /// This policy with `o` applied on top, validated. Later layers (task over global) are
    /// applied by calling `with` again.
    pub fn with(&self, o: &PolicyOverrides) -> Result<Policy, PolicyError> {
        let mut p = self.clone();
        if let Some(c) = o.concurrency {
            if c == 0 {
                return Err(err("concurrency", "must be at least 1"));
            }
            p.concurrency = c;
        }
        if let Some(c) = o.api_concurrency {
            if c == 0 {
                return Err(err("api_concurrency", "must be at least 1"));
            }
            p.api_concurrency = c;
        }
        if let Some(t) = &o.success_threshold {
            p.success_threshold = match t {
                ThresholdSpec::Text(s) => SuccessThreshold::parse(s),
                ThresholdSpec::Number(r) => SuccessThreshold::ratio(*r),
            }
            .map_err(|m| err("success_threshold", m))?;
        }
        if let Some(r) = &o.retry {
            if let Some(l) = r.limit {
                p.retry.limit = l;
            }
            dur("retry.backoff", &r.backoff, &mut p.retry.backoff)?;
            dur("retry.cap", &r.cap, &mut p.retry.cap)?;
            if let Some(f) = r.factor {
                if !f.is_finite() || !(1.0..=100.0).contains(&f) {
                    return Err(err(
                        "retry.factor",
                        format!("{f} must be between 1 and 100"),
                    ));
                }
                p.retry.factor = f;
            }
        }
        if p.retry.cap < p.retry.backoff {
            return Err(err(
                "retry.cap",
                format!(
                    "cap ({}) is smaller than backoff ({})",
                    format_duration(p.retry.cap),
                    format_duration(p.retry.backoff)
                ),
            ));
        }
        dur("queued_timeout", &o.queued_timeout, &mut p.timeouts.queued)?;
        dur(
            "running_timeout",
            &o.running_timeout,
            &mut p.timeouts.running,
        )?;
        dur(
            "overall_timeout",
            &o.overall_timeout,
            &mut p.timeouts.overall,
        )?;
        for (field, d) in [
            ("queued_timeout", p.timeouts.queued),
            ("running_timeout", p.timeouts.running),
            ("overall_timeout", p.timeouts.overall),
        ] {
            if d.is_zero() {
                return Err(err(field, "must be greater than zero"));
            }
        }
        dur(
            "unknown_search_delay",
            &o.unknown_search_delay,
            &mut p.unknown_search_delay,
        )?;
        dur(
            "reconcile_after",
            &o.reconcile_after,
            &mut p.reconcile_after,
        )?;
        if p.reconcile_after.is_zero() {
            return Err(err("reconcile_after", "must be greater than zero"));
        }
        if let Some(r) = o.reconcile_rate {
            if r == 0 {
                return Err(err("reconcile_rate", "must be at least 1"));
            }
            p.reconcile_rate = r;
        }
        dur("work_lease", &o.work_lease, &mut p.work_lease)?;
        if p.work_lease < Duration::from_secs(1) {
            return Err(err("work_lease", "must be at least 1s"));
        }
        if let Some(w) = o.workers {
            if !(1..=256).contains(&w) {
                return Err(err("workers", format!("{w} must be between 1 and 256")));
            }
            p.workers = w;
        }
        if let Some(b) = o.cancel_on_timeout {
            p.cancel_on_timeout = b;
        }
        if let Some(b) = o.allow_parallel {
            p.allow_parallel = b;
        }
        Ok(p)
    }
}

/// Why a duration string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; expected e.g. \"30s\", \"15m\", \"1h30m\"")]
    Empty,
    #[error("invalid duration {0:?}: {1}; expected e.g. \"500ms\", \"30s\", \"15m\", \"1h30m\"")]
    Invalid(String, &'static str),
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Parses `"500ms"`, `"30s"`, `"15m"`, `"1h"`, `"1h30m"`, `"2d"`: one or more `<integer><unit>`
/// parts with units `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = |why| DurationError::Invalid(t.chars().take(40).collect(), why);
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total_ms: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(invalid("expected a number"));
        }
        let n: u64 = t[start..i]
            .parse()
            .map_err(|_| DurationError::TooLarge(t.to_owned()))?;
        if bytes.get(i) == Some(&b'.') {
            return Err(invalid(
                "fractions are not supported (write 1h30m, not 1.5h)",
            ));
        }
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u64 = match &t[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(invalid("missing unit")),
            _ => return Err(invalid("unknown unit")),
        };
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| DurationError::TooLarge(t.chars().take(40).collect()))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A short human form: `"1h 30m"`, `"1m 05s"`, `"45s"`, `"250ms"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 && ms > 0 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
