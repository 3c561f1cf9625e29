//! Callback tokens: what lets a spoke's `spoke_complete` report be believed.
//!
//! A token is a JWT (HS256) signed with the hub's own key, bound to one hub run, one repository
//! and one attempt, and short-lived (it expires with the run's deadline plus a grace period).
//! A spoke echoes it back in `client_payload.callback_token`; anything that does not verify
//! against the spoke it claims to report on is rejected.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::hub::{HubRunId, RepoName};

const ISSUER: &str = "spokehub";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    /// Hub run id.
    run: String,
    /// Repository full name.
    repo: String,
    attempt: u32,
    iat: i64,
    exp: i64,
}

/// Why a callback token was not accepted. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("callback token is missing")]
    Missing,
    #[error("callback token is invalid: {0}")]
    Invalid(String),
    #[error("callback token is bound to another {0}")]
    Mismatch(&'static str),
}

/// Signs and verifies callback tokens with the hub's key.
#[derive(Clone)]
pub struct CallbackSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackSigner(..)")
    }
}

impl CallbackSigner {
    pub fn new(key: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    /// A token for one attempt of one spoke, valid until `expires_at` (unix seconds).
    pub fn issue(
        &self,
        run: &HubRunId,
        repo: &RepoName,
        attempt: u32,
        now_s: i64,
        expires_at_s: i64,
    ) -> String {
        let claims = Claims {
            iss: ISSUER.into(),
            run: run.to_string(),
            repo: repo.to_string(),
            attempt,
            iat: now_s,
            exp: expires_at_s,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// Verifies a token for `run` and `repo`; returns the attempt it is bound to.
    pub fn verify(
        &self,
        token: Option<&str>,
        run: &HubRunId,
        repo: &RepoName,
    ) -> Result<u32, TokenError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| TokenError::Invalid(e.kind_name()))?;
        if data.claims.run != run.to_string() {
            return Err(TokenError::Mismatch("hub run"));
        }
        if data.claims.repo != repo.as_str() {
            return Err(TokenError::Mismatch("repository"));
        }
        Ok(data.claims.attempt)
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    /// The error's kind without any token material.
    fn kind_name(&self) -> String {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::ExpiredSignature => "expired".into(),
            K::InvalidSignature => "bad signature".into(),
            K::InvalidIssuer => "wrong issuer".into(),
            K::InvalidAlgorithm => "wrong algorithm".into(),
            K::MissingRequiredClaim(c) => format!("missing claim {c}"),
            _ => "malformed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (CallbackSigner, HubRunId, RepoName) {
        (
            CallbackSigner::new(b"0123456789abcdef0123456789abcdef"),
            HubRunId::new_random(),
            "acme/svc-0001".parse().unwrap(),
        )
    }

    #[test]
    fn a_token_verifies_for_its_spoke_and_attempt_only() {
        let (signer, run, repo) = fixture();
        let now = chrono::Utc::now().timestamp();
        let token = signer.issue(&run, &repo, 2, now, now + 600);
        assert_eq!(signer.verify(Some(&token), &run, &repo), Ok(2));
        let other_repo: RepoName = "acme/svc-0002".parse().unwrap();
        assert_eq!(
            signer.verify(Some(&token), &run, &other_repo),
            Err(TokenError::Mismatch("repository"))
        );
        assert_eq!(
            signer.verify(Some(&token), &HubRunId::new_random(), &repo),
            Err(TokenError::Mismatch("hub run"))
        );
    }

    #[test]
    fn forged_expired_and_missing_tokens_are_rejected() {
        let (signer, run, repo) = fixture();
        let now = chrono::Utc::now().timestamp();
        let forger = CallbackSigner::new(b"another key entirely, 32 bytes!!");
        let forged = forger.issue(&run, &repo, 1, now, now + 600);
        assert_eq!(
            signer.verify(Some(&forged), &run, &repo),
            Err(TokenError::Invalid("bad signature".into()))
        );
        let expired = signer.issue(&run, &repo, 1, now - 700, now - 100);
        assert_eq!(
            signer.verify(Some(&expired), &run, &repo),
            Err(TokenError::Invalid("expired".into()))
        );
        assert_eq!(signer.verify(None, &run, &repo), Err(TokenError::Missing));
        assert!(matches!(
            signer.verify(Some("not.a.jwt"), &run, &repo),
            Err(TokenError::Invalid(_))
        ));
    }
}
