//! GitHub's object shapes (users, repositories, apps, runs, check runs), built the way the REST
//! API and the webhook payloads show them. REST and webhook variants differ slightly: webhook
//! schemas forbid unknown fields, REST shapes require a few more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use super::state::{CheckRun, Repo, WorkflowDef, WorkflowRun};

/// Fixed facts used to build URLs and owner objects.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// API base, e.g. `http://127.0.0.1:8080` (no trailing slash).
    pub base: String,
    pub org: String,
    pub org_id: u64,
    pub app_id: u64,
    pub app_slug: String,
    pub installation_id: u64,
    /// Serialized `organization` and `installation` (lite) webhook objects, built once.
    pub cache: Arc<CtxCache>,
}

/// Serialized objects that never change, shared by every payload.
#[derive(Debug, Default)]
pub struct CtxCache {
    organization: OnceLock<Arc<str>>,
    installation_lite: OnceLock<Arc<str>>,
    persons: Mutex<HashMap<String, Arc<str>>>,
}

impl Ctx {
    /// The webhook `organization` object, serialized.
    pub fn organization_raw(&self) -> Arc<str> {
        self.cache
            .organization
            .get_or_init(|| organization(self).to_string().into())
            .clone()
    }
    /// The webhook `installation` object, serialized.
    pub fn installation_raw(&self) -> Arc<str> {
        self.cache
            .installation_lite
            .get_or_init(|| installation_lite(self).to_string().into())
            .clone()
    }
    /// [`person`], serialized once per login.
    pub fn person_raw(&self, login: &str) -> Arc<str> {
        let mut m = self.cache.persons.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(login.to_owned())
            .or_insert_with(|| person(self, login).to_string().into())
            .clone()
    }
}

/// A serialized JSON document as a list of fragments whose concatenation is the document.
/// Large fragments (repositories, users) are shared between payloads instead of copied.
pub type Pieces = Vec<Arc<str>>;

/// One fragment.
pub fn one(s: impl Into<Arc<str>>) -> Pieces {
    vec![s.into()]
}

/// The document the fragments make.
pub fn concat(p: &[Arc<str>]) -> String {
    let mut out = String::with_capacity(p.iter().map(|x| x.len()).sum());
    for x in p {
        out.push_str(x);
    }
    out
}

/// Serializes `base` (an object) with already-serialized members appended: payloads are built
/// from cached fragments instead of re-building large objects for every event.
pub fn splice(base: &Value, parts: Vec<(&str, Pieces)>) -> Pieces {
    let mut cur = base.to_string();
    cur.pop(); // the closing brace
    let mut first = cur.len() == 1;
    let mut out = Pieces::with_capacity(parts.len() * 2 + 1);
    for (k, p) in parts {
        if !first {
            cur.push(',');
        }
        first = false;
        cur.push_str(&Value::String(k.to_owned()).to_string());
        cur.push(':');
        out.push(std::mem::take(&mut cur).into());
        out.extend(p);
    }
    cur.push('}');
    out.push(cur.into());
    out
}

/// A timestamp in GitHub's format.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Fixed creation time of emulated objects that predate the emulator.
pub const EPOCH: &str = "2024-01-01T00:00:00Z";

/// A user or organization as `simple-user` / webhook `user`.
pub fn user(ctx: &Ctx, login: &str, id: u64, kind: &str) -> Value {
    // Bot logins carry brackets: GitHub percent-encodes them in URLs.
    let enc: String = url::form_urlencoded::byte_serialize(login.as_bytes()).collect();
    let api = format!("{}/users/{enc}", ctx.base);
    json!({
        "login": login, "id": id, "node_id": format!("U_{id}"),
        "avatar_url": format!("{}/avatars/{enc}", ctx.base), "gravatar_id": "",
        "url": api, "html_url": format!("{}/{enc}", ctx.base),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"), "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind, "site_admin": false,
    })
}

/// The organization as a user (`owner` of repositories).
pub fn org_user(ctx: &Ctx) -> Value {
    user(ctx, &ctx.org, ctx.org_id, "Organization")
}

/// A person by login, with a stable id derived from the login.
pub fn person(ctx: &Ctx, login: &str) -> Value {
    let id = 1000
        + login
            .bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64))
            % 1_000_000;
    let kind = if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    user(ctx, login, id, kind)
}

/// The webhook `organization` object.
pub fn organization(ctx: &Ctx) -> Value {
    let api = format!("{}/orgs/{}", ctx.base, ctx.org);
    json!({
        "login": ctx.org, "id": ctx.org_id, "node_id": format!("O_{}", ctx.org_id),
        "url": api, "repos_url": format!("{api}/repos"), "events_url": format!("{api}/events"),
        "hooks_url": format!("{api}/hooks"), "issues_url": format!("{api}/issues"),
        "members_url": format!("{api}/members{{/member}}"),
        "public_members_url": format!("{api}/public_members{{/member}}"),
        "avatar_url": format!("{}/avatars/{}", ctx.base, ctx.org), "description": null,
    })
}

/// The webhook `installation` (lite) object.
pub fn installation_lite(ctx: &Ctx) -> Value {
    json!({"id": ctx.installation_id, "node_id": format!("I_{}", ctx.installation_id)})
}

/// The permissions the App holds.
pub fn permissions() -> Value {
    json!({"actions": "write", "checks": "write", "contents": "write", "metadata": "read",
           "organization_custom_properties": "read"})
}

/// The App's subscribed events.
pub fn events() -> Value {
    json!([
        "check_run",
        "repository_dispatch",
        "workflow_dispatch",
        "workflow_run"
    ])
}

/// The App's homepage (its `external_url`).
pub fn app_homepage(ctx: &Ctx) -> String {
    format!("{}/apps/{}", ctx.base, ctx.app_slug)
}

/// A check run's `details_url`: the App's own, else the App's homepage (the OpenAPI description
/// of `POST /repos/{o}/{r}/check-runs`: "If the integrator does not provide this, then the
/// homepage of the GitHub app is used"; the `check_run` payload examples show the App's
/// `external_url` there).
fn details_url(ctx: &Ctx, c: &CheckRun) -> String {
    c.details_url.clone().unwrap_or_else(|| app_homepage(ctx))
}

/// The App (`integration` in REST, `app` in webhooks).
pub fn app(ctx: &Ctx) -> Value {
    json!({
        "id": ctx.app_id, "slug": ctx.app_slug, "node_id": format!("A_{}", ctx.app_id),
        "owner": org_user(ctx), "name": ctx.app_slug, "description": "spokehub (emulated)",
        "external_url": app_homepage(ctx),
        "html_url": format!("{}/apps/{}", ctx.base, ctx.app_slug),
        "created_at": EPOCH, "updated_at": EPOCH,
        "permissions": permissions(), "events": events(),
    })
}

/// The App as webhook payloads show it (their schema knows fewer permission names).
pub fn app_hook(ctx: &Ctx) -> Value {
    let mut v = app(ctx);
    if let Some(p) = v["permissions"].as_object_mut() {
        p.remove("organization_custom_properties");
    }
    v
}

/// The REST `installation` object.
pub fn installation(ctx: &Ctx) -> Value {
    json!({
        "id": ctx.installation_id, "app_id": ctx.app_id, "app_slug": ctx.app_slug,
        "target_id": ctx.org_id, "target_type": "Organization", "single_file_name": null,
        "repository_selection": "all",
        "access_tokens_url": format!("{}/app/installations/{}/access_tokens", ctx.base, ctx.installation_id),
        "html_url": format!("{}/organizations/{}/settings/installations/{}", ctx.base, ctx.org, ctx.installation_id),
        "repositories_url": format!("{}/installation/repositories", ctx.base),
        "events": events(), "account": org_user(ctx), "permissions": permissions(),
        "created_at": EPOCH, "updated_at": EPOCH, "suspended_by": null, "suspended_at": null,
    })
}

/// The URL fields and identity every repository shape has (`repository-lite`).
pub fn repo_lite(ctx: &Ctx, r: &Repo) -> Value {
    let api = format!("{}/repos/{}", ctx.base, r.full_name);
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("id", json!(r.id));
    put("node_id", json!(format!("R_{}", r.id)));
    put("name", json!(r.name));
    put("full_name", json!(r.full_name));
    put("private", json!(r.visibility != "public"));
    put("owner", org_user(ctx));
    put("html_url", json!(format!("{}/{}", ctx.base, r.full_name)));
    put("description", Value::Null);
    put("fork", json!(r.fork));
    put("url", json!(api));
    for (k, suffix) in [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ] {
        put(k, json!(format!("{api}{suffix}")));
    }
    Value::Object(m)
}

/// The webhook `repository` object (no unknown fields allowed).
pub fn repo_hook(ctx: &Ctx, r: &Repo) -> Value {
    let mut v = repo_lite(ctx, r);
    let m = v.as_object_mut().expect("object");
    let host = ctx
        .base
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let extra = json!({
        "created_at": EPOCH, "updated_at": EPOCH, "pushed_at": EPOCH,
        "git_url": format!("git://{host}/{}.git", r.full_name),
        "ssh_url": format!("git@{host}:{}.git", r.full_name),
        "clone_url": format!("{}/{}.git", ctx.base, r.full_name),
        "svn_url": format!("{}/{}", ctx.base, r.full_name),
        "homepage": null, "size": 1, "stargazers_count": 0, "watchers_count": 0,
        "language": null, "has_issues": true, "has_projects": false, "has_downloads": true,
        "has_wiki": false, "has_pages": false, "has_discussions": false, "forks_count": 0,
        "mirror_url": null, "archived": r.archived, "disabled": false, "open_issues_count": 0,
        "license": null, "forks": 0, "open_issues": 0, "watchers": 0,
        "default_branch": r.default_branch, "is_template": false,
        "web_commit_signoff_required": false, "topics": r.topics,
        "visibility": r.visibility, "custom_properties": r.properties,
    });
    if let Value::Object(e) = extra {
        m.extend(e);
    }
    v
}

/// The REST `full-repository` object (also used where `repository`/`minimal-repository` is expected).
pub fn repo_rest(ctx: &Ctx, r: &Repo) -> Value {
    let mut v = repo_hook(ctx, r);
    let m = v.as_object_mut().expect("object");
    m.remove("custom_properties");
    m.insert("network_count".into(), json!(0));
    m.insert("subscribers_count".into(), json!(0));
    m.insert(
        "permissions".into(),
        json!({"admin": false, "maintain": false, "push": true, "triage": false, "pull": true}),
    );
    v
}

/// [`repo_rest`], serialized once per repository.
pub fn repo_rest_cached(ctx: &Ctx, r: &Repo) -> std::sync::Arc<str> {
    r.rest_json
        .get_or_init(|| {
            serde_json::to_string(&repo_rest(ctx, r))
                .unwrap_or_default()
                .into()
        })
        .clone()
}

/// [`repo_hook`], serialized once per repository.
pub fn repo_hook_cached(ctx: &Ctx, r: &Repo) -> std::sync::Arc<str> {
    r.hook_json
        .get_or_init(|| repo_hook(ctx, r).to_string().into())
        .clone()
}

/// [`repo_lite`], serialized once per repository.
pub fn repo_lite_cached(ctx: &Ctx, r: &Repo) -> std::sync::Arc<str> {
    r.lite_json
        .get_or_init(|| repo_lite(ctx, r).to_string().into())
        .clone()
}

/// The webhook `workflow` object.
pub fn workflow(ctx: &Ctx, r: &Repo, w: &WorkflowDef) -> Value {
    json!({
        "badge_url": format!("{}/{}/workflows/{}/badge.svg", ctx.base, r.full_name, w.file),
        "created_at": EPOCH, "updated_at": EPOCH,
        "html_url": format!("{}/{}/blob/{}/{}", ctx.base, r.full_name, r.default_branch, w.path),
        "id": w.id, "name": w.info.name, "node_id": format!("W_{}", w.id), "path": w.path,
        "state": "active",
        "url": format!("{}/repos/{}/actions/workflows/{}", ctx.base, r.full_name, w.id),
    })
}

fn head_commit(run: &WorkflowRun) -> Value {
    let who = json!({"name": "Emulated Person", "email": "person@example.com"});
    json!({
        "id": run.head_sha, "tree_id": run.head_sha, "message": "emulated commit",
        "timestamp": EPOCH, "author": who, "committer": who,
    })
}

/// A workflow run, serialized: REST (`hook = false`) or webhook (`hook = true`) variant.
pub fn workflow_run(ctx: &Ctx, r: &Repo, run: &WorkflowRun, hook: bool) -> Pieces {
    let api = format!("{}/repos/{}/actions/runs/{}", ctx.base, r.full_name, run.id);
    let actor = ctx.person_raw(&run.actor);
    let lite = repo_lite_cached(ctx, r);
    let mut v = json!({
        "id": run.id, "node_id": format!("WFR_{}", run.id), "name": run.workflow_name,
        "head_branch": run.head_branch, "head_sha": run.head_sha, "path": run.path,
        "display_title": run.display_title, "run_number": run.run_number, "event": run.event,
        "status": run.status, "conclusion": run.conclusion, "workflow_id": run.workflow_id,
        "check_suite_id": run.id + 1, "check_suite_node_id": format!("CS_{}", run.id + 1),
        "url": api, "html_url": run.html_url, "pull_requests": [],
        "created_at": ts(run.created_at), "updated_at": ts(run.updated_at),
        "run_attempt": run.run_attempt,
        "referenced_workflows": [], "run_started_at": ts(run.created_at),
        "jobs_url": format!("{api}/jobs"), "logs_url": format!("{api}/logs"),
        "check_suite_url": format!("{}/repos/{}/check-suites/{}", ctx.base, r.full_name, run.id + 1),
        "artifacts_url": format!("{api}/artifacts"), "cancel_url": format!("{api}/cancel"),
        "rerun_url": format!("{api}/rerun"), "previous_attempt_url": null,
        "workflow_url": format!("{}/repos/{}/actions/workflows/{}", ctx.base, r.full_name, run.workflow_id),
        "head_commit": head_commit(run),
    });
    if !hook {
        // The REST shape has no `check_suite_node_id` requirement but GitHub sends it too.
        v["check_suite_node_id"] = json!(format!("CS_{}", run.id + 1));
    }
    splice(
        &v,
        vec![
            ("actor", one(actor.clone())),
            ("triggering_actor", one(actor)),
            ("repository", one(lite.clone())),
            ("head_repository", one(lite)),
        ],
    )
}

/// The check-run `output` object.
fn output(ctx: &Ctx, r: &Repo, c: &CheckRun) -> Value {
    json!({
        "title": c.output.title, "summary": c.output.summary, "text": c.output.text,
        "annotations_count": c.annotations_count,
        "annotations_url": format!("{}/repos/{}/check-runs/{}/annotations", ctx.base, r.full_name, c.id),
    })
}

/// A check run as `GET /repos/{o}/{r}/check-runs/{id}` returns it.
pub fn check_run_rest(ctx: &Ctx, r: &Repo, c: &CheckRun) -> Value {
    json!({
        "id": c.id, "node_id": format!("CR_{}", c.id), "head_sha": c.head_sha, "name": c.name,
        "external_id": c.external_id, "details_url": details_url(ctx, c),
        "url": format!("{}/repos/{}/check-runs/{}", ctx.base, r.full_name, c.id),
        "html_url": format!("{}/{}/runs/{}", ctx.base, r.full_name, c.id),
        "status": c.status, "conclusion": c.conclusion,
        "started_at": c.started_at.map(ts), "completed_at": c.completed_at.map(ts),
        "output": output(ctx, r, c), "check_suite": {"id": c.check_suite_id},
        "app": app(ctx), "pull_requests": [],
    })
}

/// A check run inside a `check_run` webhook.
pub fn check_run_hook(ctx: &Ctx, r: &Repo, c: &CheckRun) -> Value {
    let now = ts(chrono::Utc::now());
    let suite_status = if c.status == "completed" {
        "completed"
    } else {
        "in_progress"
    };
    // Suites know no `skipped` conclusion.
    let suite_conclusion = match c.conclusion.as_deref() {
        Some("skipped") => Some("neutral"),
        other => other,
    };
    json!({
        "id": c.id, "node_id": format!("CR_{}", c.id), "head_sha": c.head_sha, "name": c.name,
        "external_id": c.external_id.clone().unwrap_or_default(),
        "details_url": details_url(ctx, c),
        "url": format!("{}/repos/{}/check-runs/{}", ctx.base, r.full_name, c.id),
        "html_url": format!("{}/{}/runs/{}", ctx.base, r.full_name, c.id),
        "status": c.status, "conclusion": c.conclusion,
        "started_at": ts(c.started_at.unwrap_or(c.created_at)),
        "completed_at": c.completed_at.map(ts),
        "output": output(ctx, r, c),
        "check_suite": {
            "id": c.check_suite_id, "node_id": format!("CS_{}", c.check_suite_id),
            "head_branch": r.default_branch, "head_sha": c.head_sha,
            "status": suite_status, "conclusion": suite_conclusion,
            "url": format!("{}/repos/{}/check-suites/{}", ctx.base, r.full_name, c.check_suite_id),
            "before": null, "after": c.head_sha, "pull_requests": [], "app": app_hook(ctx),
            "created_at": ts(c.created_at), "updated_at": now,
        },
        "app": app_hook(ctx), "pull_requests": [],
    })
}

/// GitHub's error body.
pub fn error_body(message: &str, status: u16) -> Value {
    json!({"message": message, "documentation_url": "https://docs.github.com/rest",
           "status": status.to_string()})
}
