//! Who a self-hosted agent is: its own token, given once when the agent is added and kept by
//! the hub only as a SHA-256 hash (a token has 256 random bits, so a plain hash is enough).
//! A revoked agent's token opens nothing. Refusals never show the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::store::{AgentRecord, Store, StoreError};

/// The prefix of agent tokens (so they are recognizable in a leak scan).
pub const TOKEN_PREFIX: &str = "spkagent_";

/// A new token and the hash the hub keeps.
pub fn new_token() -> (String, String) {
    let token = format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let hash = token_hash(&token);
    (token, hash)
}

/// The hash the hub keeps of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Agent names: what a host or cluster is called, usable in `agent:NAME` selectors.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Debug, thiserror::Error)]
pub enum AgentRefused {
    #[error("no agent token")]
    Missing,
    #[error("not the token of an active agent")]
    Unknown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The active agent a bearer token belongs to (its last contact is noted).
pub async fn authenticate(store: &Store, token: Option<&str>) -> Result<AgentRecord, AgentRefused> {
    let token = token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AgentRefused::Missing)?;
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(AgentRefused::Unknown);
    }
    store
        .agent_seen(&token_hash(token))
        .await?
        .ok_or(AgentRefused::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_kept_as_hashes() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_eq!(ha, token_hash(&a));
        assert_ne!(ha, hb);
        assert!(!ha.contains(&a[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn names_are_plain() {
        assert!(valid_name("cluster-eu-1"));
        assert!(valid_name("host_7.example"));
        for bad in ["", "a b", "x/y", "agent:x", &"n".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
