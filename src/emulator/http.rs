//! HTTP plumbing shared by the routes: GitHub's error shape, JSON bodies, pagination.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::json::error_body;

/// An error answered with GitHub's `{message, documentation_url}` body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// GitHub's `errors` when it is a sentence rather than a list (the API-version 400).
    pub errors: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
            headers: Vec::new(),
        }
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
    pub fn with_errors(mut self, errors: impl Into<String>) -> Self {
        self.errors = Some(errors.into());
        self
    }
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = error_body(&self.message, self.status.as_u16());
        if let Some(errors) = self.errors {
            body["errors"] = Value::String(errors);
        }
        let mut resp = (self.status, Json(body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

/// Result of a route.
pub type ApiResult<T = Response> = Result<T, ApiError>;

/// `per_page` and `page` query parameters.
#[derive(Debug, Deserialize, Default)]
pub struct PageQuery {
    pub per_page: Option<String>,
    pub page: Option<String>,
}

impl PageQuery {
    /// (per_page clamped to 1..=100, default 30; page >= 1, default 1).
    pub fn resolve(&self) -> ApiResult<(usize, usize)> {
        let per = match &self.per_page {
            None => 30,
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| ApiError::unprocessable("Invalid per_page"))?
                .clamp(1, 100),
        };
        let page = match &self.page {
            None => 1,
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| ApiError::unprocessable("Invalid page"))?
                .max(1),
        };
        Ok((per, page))
    }
}

/// The `Link` header for a page of `total` items; `extra` is the other query (without page).
pub fn link_header(
    url_path: &str,
    extra: &str,
    per: usize,
    page: usize,
    total: usize,
) -> Option<HeaderValue> {
    let last = total.div_ceil(per).max(1);
    let mk = |p: usize, rel: &str| {
        let sep = if extra.is_empty() { "" } else { "&" };
        format!("<{url_path}?{extra}{sep}per_page={per}&page={p}>; rel=\"{rel}\"")
    };
    let mut parts = Vec::new();
    if page > 1 {
        parts.push(mk(page - 1, "prev"));
        parts.push(mk(1, "first"));
    }
    if page < last {
        parts.push(mk(page + 1, "next"));
        parts.push(mk(last, "last"));
    }
    if parts.is_empty() {
        return None;
    }
    HeaderValue::from_str(&parts.join(", ")).ok()
}

/// A JSON response with a status and an optional Link header.
pub fn json_page(status: StatusCode, v: Value, link: Option<HeaderValue>) -> Response {
    let mut h = HeaderMap::new();
    if let Some(l) = link {
        h.insert("link", l);
    }
    (status, h, Json(v)).into_response()
}

/// A pre-serialized JSON response with an optional Link header.
pub fn raw_json(body: String, link: Option<HeaderValue>) -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(l) = link {
        h.insert("link", l);
    }
    (StatusCode::OK, h, body).into_response()
}

/// A JSON request body parsed whatever the content type (GitHub ignores it); an empty body is
/// `null`. `Err` when it is not JSON, so routes answer GitHub's "Problems parsing JSON".
pub struct Body(pub Result<Json<Value>, ()>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(bytes) = Bytes::from_request(req, state).await else {
            return Ok(Body(Err(())));
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Ok(Json(Value::Null))));
        }
        Ok(Body(
            serde_json::from_slice(&bytes).map(Json).map_err(|_| ()),
        ))
    }
}
