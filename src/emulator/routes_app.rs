//! App and discovery routes: the App itself, installations and tokens, repositories, file
//! contents, commits, custom properties, the rate limit, manifests and hook deliveries.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};

use super::http::{json_page, link_header, raw_json, ApiError, ApiResult, Body, PageQuery};
use super::json::{self, ts};
use super::server::Shared;
use super::state::{Token, World};
use super::webhooks::redeliver;

type S = State<Arc<Shared>>;

/// `GET /app`
pub async fn get_app(State(sh): S) -> Json<Value> {
    Json(json::app(&sh.ctx))
}

/// `GET /app/installations`
pub async fn list_installations(State(sh): S) -> Json<Value> {
    Json(json!([json::installation(&sh.ctx)]))
}

/// `GET /repos/{owner}/{repo}/installation`
pub async fn repo_installation(State(sh): S, Path((o, r)): Path<(String, String)>) -> ApiResult {
    let w = sh.world();
    w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    Ok(Json(json::installation(&sh.ctx)).into_response())
}

/// `GET /orgs/{org}/installation`
pub async fn org_installation(State(sh): S, Path(org): Path<String>) -> ApiResult {
    if !org.eq_ignore_ascii_case(&sh.ctx.org) {
        return Err(ApiError::not_found());
    }
    Ok(Json(json::installation(&sh.ctx)).into_response())
}

/// `POST /app/installations/{id}/access_tokens`
pub async fn create_token(State(sh): S, Path(id): Path<String>, Body(body): Body) -> ApiResult {
    if id.parse::<u64>().ok() != Some(sh.ctx.installation_id) {
        return Err(ApiError::not_found());
    }
    let request = match &body {
        Ok(Json(v)) if v.is_object() || v.is_null() => v.clone(),
        Ok(_) => return Err(ApiError::unprocessable("Invalid request.")),
        Err(()) => Value::Null,
    };
    let scope = super::scopes::requested(&sh.world(), &sh.ctx, &request)?;
    let mut raw = [0u8; 27];
    rand::Rng::fill(&mut rand::thread_rng(), &mut raw[..]);
    let token = format!(
        "ghs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let expires_at =
        Utc::now() + chrono::Duration::seconds(sh.scenario.spoke.token_lifetime_s as i64);
    let mut answer = json!({
        "token": token, "expires_at": ts(expires_at),
        "permissions": scope.permissions_json(), "repository_selection": "all",
    });
    {
        let mut w = sh.world();
        if let Some(repos) = &scope.repos {
            let mut sorted: Vec<usize> = repos.iter().copied().collect();
            sorted.sort_unstable();
            answer["repository_selection"] = json!("selected");
            answer["repositories"] = Value::Array(
                sorted
                    .iter()
                    .map(|&i| json::repo_rest(&sh.ctx, &w.repos[i]))
                    .collect(),
            );
        }
        let now = Utc::now();
        w.tokens.retain(|_, t| t.expires_at > now);
        w.tokens.insert(token.clone(), Token { expires_at, scope });
        w.counters.tokens_minted += 1;
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /installation/repositories`
pub async fn installation_repos(
    State(sh): S,
    Query(q): Query<PageQuery>,
    scope: Option<axum::Extension<super::scopes::TokenScope>>,
) -> ApiResult {
    let (per, page) = q.resolve()?;
    let w = sh.world();
    // A narrowed token lists only its repositories.
    let reaches = |i: usize| scope.as_ref().is_none_or(|s| s.0.reaches(i));
    let total = (0..w.repos.len()).filter(|&i| reaches(i)).count();
    let items: Vec<Arc<str>> = w
        .repos
        .iter()
        .enumerate()
        .filter(|(i, _)| reaches(*i))
        .map(|(_, r)| r)
        .skip((page - 1) * per)
        .take(per)
        .map(|r| json::repo_rest_cached(&sh.ctx, r))
        .collect();
    drop(w);
    let link = link_header(
        &format!("{}/installation/repositories", sh.ctx.base),
        "",
        per,
        page,
        total,
    );
    let mut body = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 96);
    body.push_str(&format!(
        "{{\"total_count\":{total},\"repository_selection\":\"all\",\"repositories\":["
    ));
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    Ok(raw_json(body, link))
}

/// `GET /repos/{owner}/{repo}`
pub async fn get_repo(
    State(sh): S,
    Path((o, r)): Path<(String, String)>,
    user: Option<axum::Extension<super::oauth::SignedInUser>>,
) -> ApiResult {
    let w = sh.world();
    let i = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    if let Some(axum::Extension(super::oauth::SignedInUser(u))) = user {
        // A person's token sees only what the person can read, with their permissions.
        // As on GitHub: anyone signed in may read a public repository.
        let name = &w.repos[i].name;
        if !u.can_read(name) && w.repos[i].visibility != "public" {
            return Err(ApiError::not_found());
        }
        let write = u.can_write(name);
        let mut v = json::repo_rest(&sh.ctx, &w.repos[i]);
        v["permissions"] = serde_json::json!({
            "admin": false, "maintain": false, "push": write, "triage": write, "pull": true
        });
        drop(w);
        return Ok(raw_json(v.to_string(), None));
    }
    let body = json::repo_rest_cached(&sh.ctx, &w.repos[i]);
    drop(w);
    Ok(raw_json(body.to_string(), None))
}

/// Whether `reference` names the repository's only commit (branch, full ref or sha).
pub fn resolves(w: &World, repo: usize, reference: &str) -> bool {
    let r = &w.repos[repo];
    let b = &r.default_branch;
    reference == b
        || reference == r.head_sha
        || reference.strip_prefix("refs/heads/") == Some(b)
        || reference.strip_prefix("heads/") == Some(b)
}

/// `GET /repos/{owner}/{repo}/contents/{path}`
pub async fn get_contents(
    State(sh): S,
    Path((o, r, path)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let w = sh.world();
    let i = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    if let Some(reference) = q.get("ref") {
        if !resolves(&w, i, reference) {
            return Err(ApiError::not_found()
                .with_message(format!("No commit found for the ref {reference}")));
        }
    }
    let repo = &w.repos[i];
    let ctx = &sh.ctx;
    let path = path.trim_matches('/');
    let item = |p: &str, name: &str, kind: &str, size: usize| {
        let url = format!("{}/repos/{}/contents/{p}", ctx.base, repo.full_name);
        let html = format!(
            "{}/{}/blob/{}/{p}",
            ctx.base, repo.full_name, repo.default_branch
        );
        let git = format!(
            "{}/repos/{}/git/blobs/{}",
            ctx.base, repo.full_name, repo.head_sha
        );
        json!({
            "type": kind, "size": size, "name": name, "path": p, "sha": repo.head_sha,
            "url": url, "git_url": git, "html_url": html,
            "download_url": if kind == "file" { json!(format!("{}/raw/{}/{p}", ctx.base, repo.full_name)) } else { Value::Null },
            "_links": {"self": url, "git": git, "html": html},
        })
    };
    if path == ".github/workflows" {
        let list: Vec<Value> = repo
            .workflows
            .iter()
            .map(|wf| item(&wf.path, &wf.file, "file", wf.text.len()))
            .collect();
        if list.is_empty() {
            return Err(ApiError::not_found());
        }
        return Ok(Json(Value::Array(list)).into_response());
    }
    let wf = repo
        .workflows
        .iter()
        .find(|wf| wf.path == path)
        .ok_or_else(ApiError::not_found)?;
    let mut v = item(&wf.path, &wf.file, "file", wf.text.len());
    let b64 = base64::engine::general_purpose::STANDARD.encode(wf.text.as_bytes());
    let wrapped: Vec<String> = b64
        .as_bytes()
        .chunks(60)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let obj = v.as_object_mut().expect("object");
    obj.insert("content".into(), json!(wrapped.join("\n") + "\n"));
    obj.insert("encoding".into(), json!("base64"));
    Ok(Json(v).into_response())
}

/// `GET /repos/{owner}/{repo}/commits/{ref}`
pub async fn get_commit(
    State(sh): S,
    Path((o, r, reference)): Path<(String, String, String)>,
) -> ApiResult {
    let w = sh.world();
    let i = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    if !resolves(&w, i, &reference) {
        return Err(ApiError::unprocessable(format!(
            "No commit found for SHA: {reference}"
        )));
    }
    let repo = &w.repos[i];
    let ctx = &sh.ctx;
    let url = format!(
        "{}/repos/{}/commits/{}",
        ctx.base, repo.full_name, repo.head_sha
    );
    let who =
        json!({"name": "Emulated Person", "email": "person@example.com", "date": json::EPOCH});
    Ok(Json(json!({
        "url": url, "sha": repo.head_sha, "node_id": format!("C_{}", repo.head_sha),
        "html_url": format!("{}/{}/commit/{}", ctx.base, repo.full_name, repo.head_sha),
        "comments_url": format!("{url}/comments"),
        "commit": {
            "url": format!("{}/repos/{}/git/commits/{}", ctx.base, repo.full_name, repo.head_sha),
            "author": who, "committer": who, "message": "emulated commit", "comment_count": 0,
            "tree": {"sha": repo.head_sha, "url": format!("{}/repos/{}/git/trees/{}", ctx.base, repo.full_name, repo.head_sha)},
        },
        "author": null, "committer": null, "parents": [],
    }))
    .into_response())
}

/// `GET /orgs/{org}/properties/values`
pub async fn property_values(
    State(sh): S,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    if !org.eq_ignore_ascii_case(&sh.ctx.org) {
        return Err(ApiError::not_found());
    }
    let (per, page) = q.resolve()?;
    let w = sh.world();
    let total = w.repos.len();
    let items: Vec<Value> = w
        .repos
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .map(|r| {
            let props: Vec<Value> = r
                .properties
                .iter()
                .map(|(k, v)| json!({"property_name": k, "value": v}))
                .collect();
            json!({"repository_id": r.id, "repository_name": r.name,
                   "repository_full_name": r.full_name, "properties": props})
        })
        .collect();
    drop(w);
    let link = link_header(
        &format!("{}/orgs/{}/properties/values", sh.ctx.base, sh.ctx.org),
        "",
        per,
        page,
        total,
    );
    Ok(json_page(StatusCode::OK, Value::Array(items), link))
}

/// `GET /rate_limit`
pub async fn rate_limit(State(sh): S) -> Json<Value> {
    let w = sh.world();
    let limit = sh.scenario.faults.rate_limit_per_hour;
    let core = json!({"limit": limit, "used": w.rate.used,
        "remaining": limit.saturating_sub(w.rate.used), "reset": w.rate.window_start + 3600});
    let reset = Utc::now().timestamp() + 60;
    let search = json!({"limit": 30, "used": 0, "remaining": 30, "reset": reset});
    Json(json!({
        "resources": {"core": core, "search": search, "graphql": core,
                      "integration_manifest": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset}},
        "rate": core,
    }))
}

fn delivery_item(sh: &Shared, d: &super::state::Delivery) -> Value {
    json!({
        "id": d.id, "guid": d.guid, "delivered_at": ts(d.delivered_at), "redelivery": d.redelivery,
        "duration": d.duration_ms as f64 / 1000.0, "status": d.status, "status_code": d.status_code,
        "event": d.event, "action": d.action, "installation_id": sh.ctx.installation_id,
        "repository_id": d.repository_id,
    })
}

/// `GET /app/hook/deliveries` (newest first, cursor = the last id seen).
pub async fn list_deliveries(State(sh): S, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let per = match q.get("per_page") {
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("Invalid per_page"))?
            .clamp(1, 100),
        None => 30,
    };
    let cursor = match q.get("cursor") {
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request("Invalid cursor"))?,
        ),
        None => None,
    };
    let status = q.get("status").map(String::as_str);
    let w = sh.world();
    let mut items = Vec::with_capacity(per);
    let mut more = false;
    for d in w.deliveries.iter().rev() {
        if cursor.is_some_and(|c| d.id >= c) {
            continue;
        }
        let ok = (200..300).contains(&d.status_code);
        match status {
            Some("success") if !ok => continue,
            Some("failure") if ok || d.status == "pending" => continue,
            _ => {}
        }
        if items.len() == per {
            more = true;
            break;
        }
        items.push(delivery_item(&sh, d));
    }
    drop(w);
    let mut resp = Json(Value::Array(items.clone())).into_response();
    if more {
        if let Some(last) = items.last().and_then(|v| v["id"].as_u64()) {
            let extra = status.map(|s| format!("&status={s}")).unwrap_or_default();
            let l = format!(
                "<{}/app/hook/deliveries?per_page={per}&cursor={last}{extra}>; rel=\"next\"",
                sh.ctx.base
            );
            if let Ok(h) = l.parse() {
                resp.headers_mut().insert("link", h);
            }
        }
    }
    Ok(resp)
}

/// `GET /app/hook/deliveries/{id}`
pub async fn get_delivery(State(sh): S, Path(id): Path<String>) -> ApiResult {
    let id = id.parse::<u64>().map_err(|_| ApiError::not_found())?;
    let w = sh.world();
    let d = w.delivery(id).ok_or_else(ApiError::not_found)?;
    let mut v = delivery_item(&sh, d);
    let payload: Value = serde_json::from_str(&json::concat(&d.body)).unwrap_or(Value::Null);
    let obj = v.as_object_mut().expect("object");
    obj.insert(
        "request".into(),
        json!({"headers": {"X-GitHub-Event": d.event, "X-GitHub-Delivery": d.guid}, "payload": payload}),
    );
    obj.insert("response".into(), json!({"headers": {}, "payload": null}));
    Ok(Json(v).into_response())
}

/// `POST /app/hook/deliveries/{id}/attempts`
pub async fn redeliver_route(State(sh): S, Path(id): Path<String>) -> ApiResult<Response> {
    let id = id.parse::<u64>().map_err(|_| ApiError::not_found())?;
    let mut w = sh.world();
    redeliver(&sh, &mut w, id).ok_or_else(ApiError::not_found)?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}
