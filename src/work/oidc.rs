//! Who a worker in GitHub Actions is: its job's OIDC ID token, verified against the issuer's
//! published keys (`https://token.actions.githubusercontent.com`; GHES:
//! `https://HOST/_services/token`), cached. The token must be RS256, signed by a key the
//! issuer publishes, issued by that issuer for this hub (`aud`), and within `nbf`..`exp`.
//! [`WorkerRule`] then decides whether the workflow it names may claim work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// How long the issuer's keys are kept before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` fetches the keys again, at most this often.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_S: u64 = 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OidcError {
    #[error("not a JSON web token")]
    Malformed,
    #[error("algorithm {0} is not accepted (RS256 only)")]
    Algorithm(String),
    #[error("signed by a key the issuer does not publish")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("issued by another issuer")]
    Issuer,
    #[error("issued for another audience")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("invalid claims: {0}")]
    Claims(String),
    #[error("the issuer's keys cannot be fetched: {0}")]
    Unavailable(String),
}

/// The claims of an Actions ID token that say which workflow run is asking.
#[derive(Debug, Clone, Deserialize)]
pub struct ActionsClaims {
    pub sub: String,
    pub repository: String,
    pub repository_owner: String,
    pub run_id: String,
    pub run_attempt: String,
    pub job_workflow_ref: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub event_name: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// Verifies Actions ID tokens for one audience.
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Keys>,
}

/// The issuer for an API URL: GitHub's for api.github.com, `https://HOST/_services/token` for
/// GHES (and the emulator).
pub fn issuer_for(api: &url::Url) -> String {
    if api.host_str() == Some("api.github.com") {
        return "https://token.actions.githubusercontent.com".into();
    }
    let web = crate::config::web_url_for(api);
    format!("{}/_services/token", web.as_str().trim_end_matches('/'))
}

impl OidcVerifier {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> OidcVerifier {
        OidcVerifier {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            audience: audience.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent("spokehub")
                .build()
                .expect("an HTTP client"),
            keys: tokio::sync::Mutex::new(Keys {
                by_kid: HashMap::new(),
                fetched: None,
            }),
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        let unavailable = |e: &dyn std::fmt::Display| OidcError::Unavailable(e.to_string());
        let discovery: Discovery = self
            .http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| unavailable(&e))?
            .json()
            .await
            .map_err(|e| unavailable(&e))?;
        if discovery.issuer.trim_end_matches('/') != self.issuer {
            return Err(OidcError::Unavailable(format!(
                "the discovery document names issuer {:?}",
                discovery.issuer
            )));
        }
        let jwks: Jwks = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| unavailable(&e))?
            .json()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut by_kid = HashMap::new();
        for k in jwks.keys {
            if let (true, Some(kid), Some(n), Some(e)) = (k.kty == "RSA", k.kid, k.n, k.e) {
                if let Ok(key) = DecodingKey::from_rsa_components(&n, &e) {
                    by_kid.insert(kid, key);
                }
            }
        }
        Ok(by_kid)
    }

    /// The key `kid`, from the cache or fetched (again, when it is unknown and the cache is
    /// not fresh).
    async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        let mut keys = self.keys.lock().await;
        let age = keys.fetched.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a > KEYS_TTL);
        let may_refetch = age.is_none_or(|a| a > REFETCH_AT_MOST_EVERY);
        if stale || (!keys.by_kid.contains_key(kid) && may_refetch) {
            match self.fetch_keys().await {
                Ok(by_kid) => {
                    keys.by_kid = by_kid;
                    keys.fetched = Some(Instant::now());
                }
                // Keys still within their life keep working while the issuer is away.
                Err(e) if keys.by_kid.is_empty() || stale => return Err(e),
                Err(_) => {}
            }
        }
        keys.by_kid.get(kid).cloned().ok_or(OidcError::UnknownKey)
    }

    /// The claims of a genuine, current token for this hub.
    pub async fn verify(&self, token: &str) -> Result<ActionsClaims, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // `alg: none` and unknown algorithms do not even parse as a header.
            match token.split('.').next().and_then(alg_of) {
                Some(alg) => OidcError::Algorithm(alg),
                None => OidcError::Malformed,
            }
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(OidcError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(OidcError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY_S;
        use jsonwebtoken::errors::ErrorKind as K;
        jsonwebtoken::decode::<ActionsClaims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                K::InvalidSignature => OidcError::BadSignature,
                K::ExpiredSignature => OidcError::Expired,
                K::ImmatureSignature => OidcError::NotYetValid,
                K::InvalidIssuer => OidcError::Issuer,
                K::InvalidAudience => OidcError::Audience,
                K::InvalidAlgorithm => OidcError::Algorithm("mismatch".into()),
                K::MissingRequiredClaim(c) => OidcError::Claims(format!("missing {c}")),
                K::Json(e) => OidcError::Claims(e.to_string()),
                _ => OidcError::Malformed,
            })
    }
}

/// The `alg` of a token's first part, when it is JSON.
fn alg_of(header_b64: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header_b64.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// Which workflow runs may claim a hub run's work: the worker workflow of the hub repository,
/// on its default branch, in a run the hub started for that hub run.
#[derive(Debug, Clone)]
pub struct WorkerRule {
    /// `owner/name`.
    pub hub_repo: String,
    /// `.github/workflows/spokehub-workers.yml`.
    pub workflow_path: String,
    pub default_branch: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkerRefused {
    #[error("the token is from repository {0}, not the hub repository")]
    Repository(String),
    #[error("the token is from workflow {0}, not the worker workflow on the default branch")]
    Workflow(String),
    #[error("workflow run {0} was not started by the hub for this run")]
    Run(String),
}

impl WorkerRule {
    /// Checks the claims; `runs` are the worker runs the hub started for the hub run.
    pub fn check(&self, c: &ActionsClaims, runs: &[u64]) -> Result<(), WorkerRefused> {
        if !c.repository.eq_ignore_ascii_case(&self.hub_repo) {
            return Err(WorkerRefused::Repository(c.repository.clone()));
        }
        let expected = format!(
            "{}/{}@refs/heads/{}",
            self.hub_repo, self.workflow_path, self.default_branch
        );
        // Git refs and paths are case-sensitive: compare exactly.
        if c.job_workflow_ref != expected {
            return Err(WorkerRefused::Workflow(c.job_workflow_ref.clone()));
        }
        match c.run_id.parse::<u64>() {
            Ok(id) if runs.contains(&id) => Ok(()),
            _ => Err(WorkerRefused::Run(c.run_id.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(repo: &str, wf_ref: &str, run: &str) -> ActionsClaims {
        ActionsClaims {
            sub: format!("repo:{repo}:ref:refs/heads/main"),
            repository: repo.into(),
            repository_owner: "acme".into(),
            run_id: run.into(),
            run_attempt: "1".into(),
            job_workflow_ref: wf_ref.into(),
            git_ref: "refs/heads/main".into(),
            sha: String::new(),
            actor: "octocat".into(),
            event_name: "workflow_dispatch".into(),
        }
    }

    #[test]
    fn only_the_hub_repositorys_worker_workflow_in_a_run_of_this_hub_run_may_claim() {
        let rule = WorkerRule {
            hub_repo: "acme/platform-hub".into(),
            workflow_path: ".github/workflows/spokehub-workers.yml".into(),
            default_branch: "main".into(),
        };
        let good = "acme/platform-hub/.github/workflows/spokehub-workers.yml@refs/heads/main";
        assert_eq!(
            rule.check(&claims("acme/platform-hub", good, "7"), &[7]),
            Ok(())
        );
        assert!(matches!(
            rule.check(&claims("acme/svc-0001", good, "7"), &[7]),
            Err(WorkerRefused::Repository(_))
        ));
        for wf in [
            "acme/platform-hub/.github/workflows/other.yml@refs/heads/main",
            "acme/platform-hub/.github/workflows/spokehub-workers.yml@refs/heads/feature",
            "acme/platform-hub/.github/workflows/spokehub-workers.yml@refs/pull/1/merge",
        ] {
            assert!(matches!(
                rule.check(&claims("acme/platform-hub", wf, "7"), &[7]),
                Err(WorkerRefused::Workflow(_))
            ));
        }
        assert!(matches!(
            rule.check(&claims("acme/platform-hub", good, "8"), &[7]),
            Err(WorkerRefused::Run(_))
        ));
    }

    #[test]
    fn the_issuer_follows_the_api_url() {
        let i = |u: &str| issuer_for(&url::Url::parse(u).unwrap());
        assert_eq!(
            i("https://api.github.com"),
            "https://token.actions.githubusercontent.com"
        );
        assert_eq!(
            i("https://ghes.example/api/v3"),
            "https://ghes.example/_services/token"
        );
        assert_eq!(
            i("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/_services/token"
        );
    }
}
