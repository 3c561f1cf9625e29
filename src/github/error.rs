//! Errors of the GitHub API client. Messages carry GitHub's error text and the route, never
//! tokens, keys or request headers.

use std::time::Duration;

/// Why a GitHub API call failed. Callers branch on the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("not found: {route}")]
    NotFound { route: String },
    #[error("unprocessable: {message}")]
    Unprocessable { message: String },
    #[error("unauthorized (token re-minted once, still refused)")]
    Unauthorized,
    #[error("forbidden: {message}")]
    Forbidden { message: String },
    #[error("rate limited (gave up after repeated pauses)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("GitHub server error {status}")]
    Server { status: u16 },
    /// Any other unexpected status (400, 409, 410, ...).
    #[error("unexpected status {status}: {message}")]
    Status { status: u16, message: String },
    #[error("transport error: {detail}")]
    Transport { detail: String },
    #[error("could not decode GitHub's answer: {detail}")]
    Decode { detail: String },
    #[error("configuration error: {detail}")]
    Config { detail: String },
}

impl ApiError {
    /// Worth trying again later (server trouble, transport, rate limit)?
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Server { .. } | ApiError::Transport { .. } | ApiError::RateLimited { .. }
        )
    }
}

/// GitHub's `message` from an error body (or the start of the body), shortened.
pub(crate) fn github_message(body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    let mut msg: String = msg.chars().take(300).collect();
    if msg.is_empty() {
        msg.push_str("(no message)");
    }
    msg
}

/// Map an error status to an [`ApiError`] (for statuses the caller has no special case for).
pub(crate) fn from_status(status: u16, route: &str, body: &str) -> ApiError {
    match status {
        401 => ApiError::Unauthorized,
        403 => ApiError::Forbidden {
            message: github_message(body),
        },
        404 => ApiError::NotFound {
            route: route.to_owned(),
        },
        422 => ApiError::Unprocessable {
            message: github_message(body),
        },
        500..=599 => ApiError::Server { status },
        _ => ApiError::Status {
            status,
            message: github_message(body),
        },
    }
}

/// Describe an octocrab error without anything secret: its chain of sources, which never
/// includes headers. (`Display` of octocrab errors may append a backtrace; only the first
/// line of each level is kept.)
pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default().to_owned();
        if !line.is_empty() && !parts.contains(&line) {
            parts.push(line);
        }
        cur = e.source();
    }
    let mut s = parts.join(": ");
    s.truncate(500);
    s
}

/// True when the error chain shows the connection was never made, so nothing was sent.
pub(crate) fn never_connected(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}
