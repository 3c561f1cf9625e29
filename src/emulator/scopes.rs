//! Installation tokens narrowed to some repositories and permissions
//! (`POST /app/installations/{id}/access_tokens` with `repositories`, `repository_ids`,
//! `permissions`), enforced as GitHub does: a repository outside the token answers 404, a
//! permission it lacks answers 403 "Resource not accessible by integration".

use std::collections::{BTreeMap, HashSet};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::http::ApiError;
use super::json::Ctx;
use super::state::World;

/// GitHub's bound on `repositories` / `repository_ids` in one request.
pub const MAX_REPOSITORIES: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Read,
    Write,
    Admin,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            "admin" => Some(Level::Admin),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        }
    }
}

/// What a token may reach; `None`: everything the installation may.
#[derive(Debug, Clone, Default)]
pub struct TokenScope {
    /// Repository indices in the world.
    pub repos: Option<HashSet<usize>>,
    pub permissions: Option<BTreeMap<String, Level>>,
}

/// The App's permissions (what `json::permissions` shows).
fn app_permissions() -> BTreeMap<String, Level> {
    let mut m = BTreeMap::new();
    if let Some(obj) = super::json::permissions().as_object() {
        for (k, v) in obj {
            if let Some(l) = v.as_str().and_then(Level::parse) {
                m.insert(k.clone(), l);
            }
        }
    }
    m
}

fn unprocessable(message: &str) -> ApiError {
    ApiError::unprocessable(message)
}

/// The scope a token request asks for; 422 for what GitHub refuses.
pub fn requested(w: &World, ctx: &Ctx, body: &Value) -> Result<TokenScope, ApiError> {
    let mut scope = TokenScope::default();
    let names = body.get("repositories").filter(|v| !v.is_null());
    let ids = body.get("repository_ids").filter(|v| !v.is_null());
    if names.is_some() || ids.is_some() {
        let mut repos = HashSet::new();
        let missing = || {
            unprocessable(
                "There is at least one repository that does not exist or is not accessible to the parent installation.",
            )
        };
        if let Some(names) = names {
            let list = names
                .as_array()
                .ok_or_else(|| unprocessable("Invalid request."))?;
            if list.len() > MAX_REPOSITORIES {
                return Err(unprocessable("Too many repositories were requested."));
            }
            for n in list {
                let name = n
                    .as_str()
                    .ok_or_else(|| unprocessable("Invalid request."))?;
                // A bare name, as GitHub takes it; `owner/name` is accepted for the owner.
                let name = name.strip_prefix(&format!("{}/", ctx.org)).unwrap_or(name);
                repos.insert(*w.repo_index.get(name).ok_or_else(missing)?);
            }
        }
        if let Some(ids) = ids {
            let list = ids
                .as_array()
                .ok_or_else(|| unprocessable("Invalid request."))?;
            if list.len() > MAX_REPOSITORIES {
                return Err(unprocessable("Too many repositories were requested."));
            }
            for id in list {
                let id = id
                    .as_u64()
                    .ok_or_else(|| unprocessable("Invalid request."))?;
                let i = w
                    .repos
                    .iter()
                    .position(|r| r.id == id)
                    .ok_or_else(missing)?;
                repos.insert(i);
            }
        }
        scope.repos = Some(repos);
    }
    if let Some(p) = body.get("permissions").filter(|v| !v.is_null()) {
        let obj = p
            .as_object()
            .ok_or_else(|| unprocessable("Invalid request."))?;
        let app = app_permissions();
        let mut m = BTreeMap::new();
        for (k, v) in obj {
            let level = v.as_str().and_then(Level::parse).ok_or_else(|| {
                unprocessable(&format!("The permission level {v} for {k} is not valid."))
            })?;
            match app.get(k) {
                Some(granted) if *granted >= level => {
                    m.insert(k.clone(), level);
                }
                _ => {
                    return Err(unprocessable(
                        "The permissions requested are not granted to this installation.",
                    ))
                }
            }
        }
        scope.permissions = Some(m);
    }
    Ok(scope)
}

impl TokenScope {
    /// The `permissions` of the token's answer.
    pub fn permissions_json(&self) -> Value {
        match &self.permissions {
            None => super::json::permissions(),
            Some(m) => Value::Object(
                m.iter()
                    .map(|(k, l)| (k.clone(), json!(l.as_str())))
                    .collect(),
            ),
        }
    }

    /// Whether repository `i` is within the token.
    pub fn reaches(&self, i: usize) -> bool {
        self.repos.as_ref().is_none_or(|r| r.contains(&i))
    }

    /// Checks a request against the token: 404 outside its repositories, 403 beyond its
    /// permissions.
    pub fn check(
        &self,
        w: &World,
        ctx: &Ctx,
        method: &Method,
        route: &str,
        path: &str,
    ) -> Result<(), ApiError> {
        if self.repos.is_some() && route.starts_with("/repos/{o}/{r}") {
            let mut seg = path.trim_start_matches('/').split('/').skip(1);
            let (owner, name) = (seg.next().unwrap_or(""), seg.next().unwrap_or(""));
            match w.repo(ctx, owner, name) {
                Some(i) if self.reaches(i) => {}
                _ => return Err(ApiError::not_found()),
            }
        }
        if let (Some(perms), Some((perm, level))) = (&self.permissions, required(method, route)) {
            if perms.get(perm).is_none_or(|have| *have < level) && perm != "metadata" {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Resource not accessible by integration",
                ));
            }
        }
        Ok(())
    }
}

/// The permission a route needs (metadata: every token has it).
fn required(method: &Method, route: &str) -> Option<(&'static str, Level)> {
    let write = if method == Method::GET {
        Level::Read
    } else {
        Level::Write
    };
    let r = route.strip_prefix("/repos/{o}/{r}").unwrap_or(route);
    Some(match r {
        "" => ("metadata", Level::Read),
        _ if r.starts_with("/contents") || r == "/commits/{reference}" => ("contents", write),
        "/dispatches" => ("contents", Level::Write),
        _ if r.starts_with("/actions") => ("actions", write),
        _ if r.starts_with("/check-runs") || r.ends_with("/check-runs") => ("checks", write),
        "/orgs/{org}/properties/values" => ("organization_custom_properties", Level::Read),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_permission_github_asks_for() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            required(&post, "/repos/{o}/{r}/actions/workflows/{wf}/dispatches"),
            Some(("actions", Level::Write))
        );
        assert_eq!(
            required(&get, "/repos/{o}/{r}/actions/runs/{id}"),
            Some(("actions", Level::Read))
        );
        assert_eq!(
            required(&post, "/repos/{o}/{r}/dispatches"),
            Some(("contents", Level::Write))
        );
        assert_eq!(
            required(&post, "/repos/{o}/{r}/check-runs"),
            Some(("checks", Level::Write))
        );
        assert_eq!(
            required(&get, "/repos/{o}/{r}/commits/{reference}/check-runs"),
            Some(("checks", Level::Read))
        );
        assert_eq!(required(&get, "/rate_limit"), None);
    }
}
