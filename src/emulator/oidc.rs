//! GitHub Actions' OIDC issuer, as GHES serves it (`BASE/_services/token`): its discovery
//! document and keys, and ID tokens for simulated jobs that have `id-token: write`.
//!
//! A job gets `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`
//! (`POST /_emulator/oidc/jobs` hands them out for a job of the test's choosing);
//! `GET $URL&audience=AUD` with `Authorization: bearer $TOKEN` returns `{"value": JWT}`, RS256,
//! with GitHub's claims, valid for 5 minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::Deserialize;
use serde_json::{json, Value};

use super::server::Shared;

/// How long an ID token lives (GitHub: about 5 minutes).
pub const ID_TOKEN_TTL_S: i64 = 300;

/// A simulated job allowed to ask for ID tokens.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// `owner/name` of the repository the workflow runs in.
    pub repository: String,
    /// The workflow file, e.g. `.github/workflows/spokehub-workers.yml`.
    pub workflow_path: String,
    #[serde(default = "default_ref")]
    pub git_ref: String,
    #[serde(default)]
    pub sha: String,
    pub run_id: u64,
    #[serde(default = "one")]
    pub run_attempt: u64,
    #[serde(default = "default_actor")]
    pub actor: String,
    #[serde(default = "default_event")]
    pub event_name: String,
    /// Lifetime of its ID tokens in seconds (default 300; 0 or less: already expired).
    #[serde(default)]
    pub token_ttl_s: Option<i64>,
}

fn default_ref() -> String {
    "refs/heads/main".into()
}
fn one() -> u64 {
    1
}
fn default_actor() -> String {
    "octocat".into()
}
fn default_event() -> String {
    "workflow_dispatch".into()
}

/// The issuer's key and the jobs that may ask for tokens.
pub struct Issuer {
    key: EncodingKey,
    kid: String,
    jwk: Value,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl Issuer {
    pub fn new(key: &RsaPrivateKey) -> anyhow::Result<Issuer> {
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| anyhow::anyhow!("cannot encode the OIDC key"))?;
        let public = key.to_public_key();
        let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
        let kid = hex::encode(&sha2_digest(n.as_bytes())[..8]);
        Ok(Issuer {
            key: EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|_| anyhow::anyhow!("cannot load the OIDC key"))?,
            jwk: json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e}),
            kid,
            jobs: Mutex::new(HashMap::new()),
        })
    }

    /// The issuer URL of an emulator at `base`.
    pub fn url(base: &str) -> String {
        format!("{base}/_services/token")
    }

    /// Registers a job; its request token.
    pub fn add_job(&self, job: Job) -> String {
        let token = hex::encode(rand::random::<[u8; 20]>());
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), Arc::new(job));
        token
    }

    fn job(&self, request_token: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(request_token)
            .cloned()
    }

    /// An ID token for `job` with audience `aud`.
    pub fn id_token(&self, base: &str, job: &Job, aud: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let ttl = job.token_ttl_s.unwrap_or(ID_TOKEN_TTL_S);
        let owner = job.repository.split('/').next().unwrap_or("");
        let workflow_ref = format!("{}/{}@{}", job.repository, job.workflow_path, job.git_ref);
        let claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("repo:{}:ref:{}", job.repository, job.git_ref),
            "aud": aud,
            "ref": job.git_ref,
            "sha": job.sha,
            "repository": job.repository,
            "repository_id": "500000",
            "repository_owner": owner,
            "repository_owner_id": "9000001",
            "run_id": job.run_id.to_string(),
            "run_number": job.run_id.to_string(),
            "run_attempt": job.run_attempt.to_string(),
            "actor": job.actor,
            "workflow": job.workflow_path.rsplit('/').next().unwrap_or(""),
            "workflow_ref": workflow_ref,
            "job_workflow_ref": workflow_ref,
            "event_name": job.event_name,
            "ref_type": "branch",
            "iss": Self::url(base),
            "nbf": now - 5,
            "iat": now,
            "exp": now + ttl,
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default()
    }
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

type S = State<Arc<Shared>>;

/// `GET /_services/token/.well-known/openid-configuration`
pub async fn discovery(State(sh): S) -> Response {
    let issuer = Issuer::url(&sh.ctx.base);
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks"),
        "subject_types_supported": ["public", "pairwise"],
        "response_types_supported": ["id_token"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository",
            "repository_id", "repository_owner", "repository_owner_id", "run_id", "run_number",
            "run_attempt", "actor", "workflow", "workflow_ref", "job_workflow_ref", "event_name",
            "ref_type", "sha"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
    }))
    .into_response()
}

/// `GET /_services/token/.well-known/jwks`
pub async fn jwks(State(sh): S) -> Response {
    Json(json!({ "keys": [sh.oidc().jwk.clone()] })).into_response()
}

#[derive(Deserialize)]
pub struct TokenQuery {
    audience: Option<String>,
}

/// `GET /_services/token/id-token?api-version=2.0&audience=AUD` with the job's request token.
pub async fn id_token(State(sh): S, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let token = super::server::bearer(&headers).unwrap_or("");
    let Some(job) = sh.oidc().job(token.trim()) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        )
            .into_response();
    };
    let aud = q.audience.unwrap_or_else(|| {
        format!(
            "https://github.com/{}",
            job.repository.split('/').next().unwrap_or("")
        )
    });
    Json(json!({ "value": sh.oidc().id_token(&sh.ctx.base, &job, &aud) })).into_response()
}

/// `POST /_emulator/oidc/jobs` with a [`Job`]: the job's `ACTIONS_ID_TOKEN_REQUEST_URL` and
/// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
pub async fn add_job(State(sh): S, Json(job): Json<Job>) -> Response {
    let token = sh.oidc().add_job(job);
    Json(json!({
        "ACTIONS_ID_TOKEN_REQUEST_URL": format!("{}/id-token?api-version=2.0", Issuer::url(&sh.ctx.base)),
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": token,
    }))
    .into_response()
}
