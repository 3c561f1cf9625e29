//! One installation's view of the REST API: discovery, dispatch, runs and check runs. Every
//! call goes through [`Conn::send`](super::send), which holds the retry and rate-limit policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use http::Method;
use octocrab::Octocrab;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::app::{ApiVersion, Settings};
use super::error::{from_status, github_message, ApiError};
use super::send::{route_of, ClientStats, Conn, Reply, Resend};
use super::types::{CheckRunInfo, CheckRunRequest, WorkflowRun};
use crate::hub::{InstallationId, RepoInfo, RepoName, Sha, Visibility};

/// What became of a `workflow_dispatch` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchOutcome {
    /// 200 with run details (`run_url` is the run's `html_url`), or 204 without.
    Created {
        run_id: Option<u64>,
        run_url: Option<String>,
    },
    /// 404: the workflow file does not exist on the default branch. Permanent.
    WorkflowNotFound,
    /// 422 with GitHub's message (no dispatch trigger, bad inputs, no such ref). Permanent.
    Rejected { message: String },
    /// 5xx, timeout or dropped connection after the request may have been sent: a run may
    /// exist. Look for it (by run-name) before dispatching again.
    Unknown { detail: String },
    /// The request certainly had no effect (401 after re-mint, 403, rate limit, ...).
    Failed { error: ApiError },
}

/// The client of one installation. Cheap to clone.
#[derive(Clone)]
pub struct InstallationClient {
    id: InstallationId,
    conn: Arc<Conn>,
}

impl std::fmt::Debug for InstallationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationClient")
            .field("installation_id", &self.id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn decode<T: DeserializeOwned>(reply: &Reply, route: &str) -> Result<T, ApiError> {
    serde_json::from_str(&reply.body).map_err(|e| ApiError::Decode {
        detail: format!("{route}: {e}"),
    })
}

/// Percent-encode a path segment (keeps `/` when `keep_slash`, for git refs).
fn enc(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn repo_path(repo: &RepoName) -> String {
    format!(
        "/repos/{}/{}",
        enc(repo.owner(), false),
        enc(repo.name(), false)
    )
}

/// A workflow file name or id; a full path (`.github/workflows/x.yml`) is reduced to its name.
fn workflow_segment(workflow_file: &str) -> String {
    enc(
        workflow_file.rsplit('/').next().unwrap_or(workflow_file),
        false,
    )
}

#[derive(Deserialize)]
struct RawRepo {
    full_name: RepoName,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    fork: bool,
    #[serde(default)]
    visibility: Option<Visibility>,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

impl From<RawRepo> for RepoInfo {
    fn from(r: RawRepo) -> Self {
        let visibility = r.visibility.unwrap_or(if r.private {
            Visibility::Private
        } else {
            Visibility::Public
        });
        RepoInfo {
            name: r.full_name,
            default_branch: r.default_branch.unwrap_or_else(|| "main".into()),
            archived: r.archived,
            fork: r.fork,
            visibility,
            topics: r.topics.unwrap_or_default(),
            properties: BTreeMap::new(),
        }
    }
}

impl InstallationClient {
    pub(crate) fn new(id: InstallationId, crab: Octocrab, settings: Arc<Settings>) -> Self {
        Self {
            id,
            conn: Arc::new(Conn::new(crab, settings, Some(id.0))),
        }
    }

    /// The installation this client acts for.
    pub fn installation_id(&self) -> InstallationId {
        self.id
    }

    /// Requests sent, retries and rate-limit waits so far.
    pub fn stats(&self) -> ClientStats {
        self.conn.stats()
    }

    /// The commit a branch, tag or sha points at (`GET /repos/{o}/{r}/commits/{ref}`).
    pub async fn resolve_ref(&self, repo: &RepoName, git_ref: &str) -> Result<Sha, ApiError> {
        #[derive(Deserialize)]
        struct Commit {
            sha: Sha,
        }
        let path = format!("{}/commits/{}", repo_path(repo), enc(git_ref, false));
        let reply = self.conn.get_ok(&path).await?;
        Ok(decode::<Commit>(&reply, &path)?.sha)
    }

    /// Every repository of the installation (all pages, 100 per page).
    pub async fn list_repositories(&self) -> Result<Vec<RepoInfo>, ApiError> {
        #[derive(Deserialize)]
        struct Page {
            repositories: Vec<RawRepo>,
        }
        let mut out = Vec::new();
        self.conn
            .for_each_page("/installation/repositories?per_page=100", |p| {
                let page: Page = decode(p, "/installation/repositories")?;
                out.extend(page.repositories.into_iter().map(RepoInfo::from));
                Ok(())
            })
            .await?;
        Ok(out)
    }

    /// Custom property values of every repository of `org` (all pages). Multi-select values
    /// are joined with `,`; unset (null) values are left out.
    pub async fn custom_properties(
        &self,
        org: &str,
    ) -> Result<HashMap<RepoName, BTreeMap<String, String>>, ApiError> {
        #[derive(Deserialize)]
        struct Entry {
            repository_full_name: RepoName,
            #[serde(default)]
            properties: Vec<Prop>,
        }
        #[derive(Deserialize)]
        struct Prop {
            property_name: String,
            #[serde(default)]
            value: Value,
        }
        let first = format!("/orgs/{}/properties/values?per_page=100", enc(org, false));
        let mut out = HashMap::new();
        self.conn
            .for_each_page(&first, |page| {
                for entry in decode::<Vec<Entry>>(page, &route_of(&first))? {
                    let props = entry
                        .properties
                        .into_iter()
                        .filter_map(|p| {
                            let v = match p.value {
                                Value::String(s) => s,
                                Value::Array(items) => items
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                Value::Null => return None,
                                other => other.to_string(),
                            };
                            Some((p.property_name, v))
                        })
                        .collect();
                    out.insert(entry.repository_full_name, props);
                }
                Ok(())
            })
            .await?;
        Ok(out)
    }

    /// Trigger `workflow_dispatch`. Never resent after it may have reached GitHub.
    pub async fn dispatch_workflow(
        &self,
        repo: &RepoName,
        workflow_file: &str,
        git_ref: &str,
        inputs: &serde_json::Map<String, Value>,
    ) -> DispatchOutcome {
        #[derive(Deserialize)]
        struct Details {
            workflow_run_id: Option<u64>,
            html_url: Option<String>,
        }
        let path = format!(
            "{}/actions/workflows/{}/dispatches",
            repo_path(repo),
            workflow_segment(workflow_file)
        );
        let settings = self.conn.settings();
        let flag = &settings.no_run_details;
        loop {
            // `2026-03-10` always answers with the details and has no such field.
            let with_details =
                settings.api_version == ApiVersion::V2022_11_28 && !flag.load(Ordering::Relaxed);
            let mut body = json!({ "ref": git_ref, "inputs": inputs });
            if with_details {
                body["return_run_details"] = Value::Bool(true);
            }
            let reply = match self
                .conn
                .send(Method::POST, &path, Some(&body), Resend::Never)
                .await
            {
                Ok(r) => r,
                Err(f) if f.maybe_applied => {
                    return DispatchOutcome::Unknown {
                        detail: f.error.to_string(),
                    }
                }
                Err(f) => return DispatchOutcome::Failed { error: f.error },
            };
            return match reply.status {
                200 => match serde_json::from_str::<Details>(&reply.body) {
                    Ok(d) => DispatchOutcome::Created {
                        run_id: d.workflow_run_id,
                        run_url: d.html_url,
                    },
                    // The dispatch happened; only the details are unreadable.
                    Err(_) => DispatchOutcome::Created {
                        run_id: None,
                        run_url: None,
                    },
                },
                201..=299 => DispatchOutcome::Created {
                    run_id: None,
                    run_url: None,
                },
                // Older GHES rejects the unknown field: the request had no effect.
                // (GitHub names the key it does not permit.)
                400 if with_details && reply.body.contains("return_run_details") => {
                    tracing::info!(
                        "API host rejects return_run_details; dispatching without it from now on"
                    );
                    flag.store(true, Ordering::Relaxed);
                    continue;
                }
                404 => DispatchOutcome::WorkflowNotFound,
                422 => DispatchOutcome::Rejected {
                    message: github_message(&reply.body),
                },
                s => DispatchOutcome::Failed {
                    error: from_status(s, &path, &reply.body),
                },
            };
        }
    }

    /// Runs of one workflow triggered by `workflow_dispatch` since `created_since` (every page).
    pub async fn find_runs(
        &self,
        repo: &RepoName,
        workflow_file: &str,
        created_since: DateTime<Utc>,
    ) -> Result<Vec<WorkflowRun>, ApiError> {
        #[derive(Deserialize)]
        struct Page {
            workflow_runs: Vec<WorkflowRun>,
        }
        let since = created_since.to_rfc3339_opts(SecondsFormat::Secs, true);
        let first = format!(
            "{}/actions/workflows/{}/runs?event=workflow_dispatch&created=%3E%3D{}&per_page=100",
            repo_path(repo),
            workflow_segment(workflow_file),
            enc(&since, false)
        );
        let mut out = Vec::new();
        self.conn
            .for_each_page(&first, |p| {
                out.extend(decode::<Page>(p, &route_of(&first))?.workflow_runs);
                Ok(())
            })
            .await?;
        Ok(out)
    }

    /// One workflow run (`GET /repos/{o}/{r}/actions/runs/{id}`).
    pub async fn get_run(&self, repo: &RepoName, run_id: u64) -> Result<WorkflowRun, ApiError> {
        let path = format!("{}/actions/runs/{run_id}", repo_path(repo));
        decode(&self.conn.get_ok(&path).await?, &path)
    }

    /// Cancel a run. 202 and 409 (already completed) are both success.
    pub async fn cancel_run(&self, repo: &RepoName, run_id: u64) -> Result<(), ApiError> {
        let path = format!("{}/actions/runs/{run_id}/cancel", repo_path(repo));
        let reply = self
            .conn
            .send(Method::POST, &path, None, Resend::Safe)
            .await
            .map_err(|f| f.error)?;
        match reply.status {
            200..=299 | 409 => Ok(()),
            s => Err(from_status(s, &path, &reply.body)),
        }
    }

    /// Create a check run; returns its id. Not resent after a 5xx/timeout: reconcile through
    /// [`check_runs_for_ref`](Self::check_runs_for_ref) by `external_id`.
    pub async fn create_check_run(
        &self,
        repo: &RepoName,
        req: &CheckRunRequest,
    ) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        let path = format!("{}/check-runs", repo_path(repo));
        let body = serde_json::to_value(req).map_err(|e| ApiError::Decode {
            detail: e.to_string(),
        })?;
        let reply = self
            .conn
            .send(Method::POST, &path, Some(&body), Resend::Never)
            .await
            .map_err(|f| f.error)?;
        if !(200..300).contains(&reply.status) {
            return Err(from_status(reply.status, &path, &reply.body));
        }
        Ok(decode::<Created>(&reply, &path)?.id)
    }

    /// Update a check run (idempotent: retried on transient failures).
    pub async fn update_check_run(
        &self,
        repo: &RepoName,
        id: u64,
        req: &CheckRunRequest,
    ) -> Result<(), ApiError> {
        let path = format!("{}/check-runs/{id}", repo_path(repo));
        let body = serde_json::to_value(req).map_err(|e| ApiError::Decode {
            detail: e.to_string(),
        })?;
        let reply = self
            .conn
            .send(Method::PATCH, &path, Some(&body), Resend::Safe)
            .await
            .map_err(|f| f.error)?;
        match reply.status {
            200..=299 => Ok(()),
            s => Err(from_status(s, &path, &reply.body)),
        }
    }

    /// Check runs named `name` on commit `sha` (every page).
    pub async fn check_runs_for_ref(
        &self,
        repo: &RepoName,
        sha: &Sha,
        name: &str,
    ) -> Result<Vec<CheckRunInfo>, ApiError> {
        #[derive(Deserialize)]
        struct Page {
            check_runs: Vec<CheckRunInfo>,
        }
        let first = format!(
            "{}/commits/{sha}/check-runs?check_name={}&per_page=100",
            repo_path(repo),
            enc(name, false)
        );
        let mut out = Vec::new();
        self.conn
            .for_each_page(&first, |p| {
                out.extend(decode::<Page>(p, &route_of(&first))?.check_runs);
                Ok(())
            })
            .await?;
        Ok(out)
    }
}
