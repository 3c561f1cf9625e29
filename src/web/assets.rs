//! The page's script and style sheet, compiled into the binary and served from the hub itself
//! (the Content-Security-Policy allows nothing else).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const SCRIPT: &str = include_str!("assets/run.js");
const STYLE: &str = include_str!("assets/spokehub.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    super::secure_headers(h);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// `GET /assets/run.js`
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /assets/spokehub.css`
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
