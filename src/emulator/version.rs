//! REST API versions: the `X-GitHub-Api-Version` a request selects, and GitHub's answer to a
//! version it does not serve.
//!
//! Based on GitHub's "API Versions" page (docs.github.com/rest/about-the-rest-api/api-versions):
//! requests without the header use `2022-11-28`; an unsupported version is a 400; the answer
//! carries `x-github-api-version-selected`. The 400's text is api.github.com's as quoted in
//! public bug reports (e.g. expipiplus1/update-nix-fetchgit#79: "The version you specified in
//! the \"X-GitHub-API-Version\" request header, \"v3\", is not a supported version. The
//! following versions are currently supported: \"2022-11-28\" (most recent)."), in the body
//! shape those reports show: `{"message": "Bad Request", "errors": "<that text>",
//! "documentation_url": "https://docs.github.com/rest", "status": "400"}` (`errors` is a string
//! here). With two versions the list reads `"2026-03-10" (most recent) and "2022-11-28"`.
//! No `x-github-api-version-selected` on that answer: no version was selected.

use axum::http::{HeaderMap, StatusCode};

use super::http::ApiError;

/// A REST API version the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiVersion {
    /// The first dated version, and the default when the header is absent.
    V2022_11_28,
    /// A workflow dispatch always answers 200 with the run details; `return_run_details` is
    /// gone from the request body.
    V2026_03_10,
}

impl ApiVersion {
    /// Every version, newest first.
    pub const ALL: [ApiVersion; 2] = [ApiVersion::V2026_03_10, ApiVersion::V2022_11_28];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2022_11_28 => "2022-11-28",
            ApiVersion::V2026_03_10 => "2026-03-10",
        }
    }

    /// Versions the emulated host serves, newest first. GitHub Enterprise Server 3.20 predates
    /// `2026-03-10` (it does not know `return_run_details` either).
    pub fn supported(ghes_3_20: bool) -> &'static [ApiVersion] {
        if ghes_3_20 {
            &[ApiVersion::V2022_11_28]
        } else {
            &ApiVersion::ALL
        }
    }
}

/// The version a request selects: the header's, `2022-11-28` when it is absent or blank, or
/// GitHub's 400 when the host does not serve it. Several header lines are one comma-separated
/// value (RFC 9110, section 5.3), which names no version: GitHub does not document that case,
/// and this strict reading catches clients that send the header twice.
pub fn select(headers: &HeaderMap, ghes_3_20: bool) -> Result<ApiVersion, ApiError> {
    let supported = ApiVersion::supported(ghes_3_20);
    let lines: Vec<String> = headers
        .get_all("x-github-api-version")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .collect();
    if lines.is_empty() {
        return Ok(ApiVersion::V2022_11_28);
    }
    let requested = lines.join(", ");
    if requested.is_empty() {
        return Ok(ApiVersion::V2022_11_28);
    }
    if let Some(v) = supported.iter().find(|v| v.as_str() == requested) {
        return Ok(*v);
    }
    Err(
        ApiError::new(StatusCode::BAD_REQUEST, "Bad Request").with_errors(format!(
        "The version you specified in the \"X-GitHub-API-Version\" request header, {requested:?}, \
         is not a supported version. The following versions are currently supported: {}.",
        listing(supported)
    )),
    )
}

/// `"2026-03-10" (most recent) and "2022-11-28"`, as GitHub lists them.
fn listing(supported: &[ApiVersion]) -> String {
    let quoted: Vec<String> = supported
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i == 0 {
                format!("\"{}\" (most recent)", v.as_str())
            } else {
                format!("\"{}\"", v.as_str())
            }
        })
        .collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-github-api-version", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn absent_or_blank_is_the_first_version() {
        assert_eq!(
            select(&HeaderMap::new(), false).unwrap(),
            ApiVersion::V2022_11_28
        );
        assert_eq!(select(&with(" "), false).unwrap(), ApiVersion::V2022_11_28);
        assert_eq!(
            select(&with("2026-03-10"), false).unwrap(),
            ApiVersion::V2026_03_10
        );
    }

    #[test]
    fn unknown_versions_get_githubs_message() {
        let e = select(&with("v3"), false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "Bad Request");
        assert_eq!(
            e.errors.as_deref(),
            Some("The version you specified in the \"X-GitHub-API-Version\" request header, \"v3\", is not a supported version. The following versions are currently supported: \"2026-03-10\" (most recent) and \"2022-11-28\".")
        );
        let mut twice = with("2022-11-28");
        twice.append(
            "x-github-api-version",
            HeaderValue::from_static("2026-03-10"),
        );
        let e = select(&twice, false).unwrap_err();
        assert!(
            e.errors
                .as_deref()
                .unwrap()
                .contains("header, \"2022-11-28, 2026-03-10\", is not"),
            "{e:?}"
        );
        let e = select(&with("2026-03-10"), true).unwrap_err();
        assert!(
            e.errors
                .as_deref()
                .unwrap()
                .ends_with("supported: \"2022-11-28\" (most recent)."),
            "{e:?}"
        );
    }
}
