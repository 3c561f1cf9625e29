//! Newtypes for the identifiers the hub passes around, so a repository name is never confused
//! with a sha or a run id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?}")]
pub struct ParseIdError {
    pub kind: &'static str,
    pub value: String,
}

impl ParseIdError {
    fn new(kind: &'static str, value: &str) -> Self {
        let mut value = value.to_owned();
        value.truncate(80);
        Self { kind, value }
    }
}

/// One execution of a task over a target set: a random, unguessable UUID v4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HubRunId(Uuid);

impl HubRunId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for HubRunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for HubRunId {
    type Err = ParseIdError;
    /// Accepts only the canonical lowercase hyphenated form, the one the hub hands out.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError::new("hub run id", s);
        if s.len() != 36 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        Uuid::parse_str(s).map(Self).map_err(|_| err())
    }
}

impl TryFrom<String> for HubRunId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HubRunId> for String {
    fn from(id: HubRunId) -> Self {
        id.to_string()
    }
}

/// A spoke's target: a repository's full name, `owner/name`, as GitHub spells it; or, for pull
/// tasks whose targets are the agents themselves (clusters, hosts), `agent:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName {
    full: String,
    /// Where the owner ends: the `/` of a repository, the `:` of an agent target.
    slash: usize,
    kind: TargetKind,
}

/// What a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TargetKind {
    Repository,
    Agent,
}

/// How agent targets are written (and stored).
pub const AGENT_TARGET_PREFIX: &str = "agent:";

impl RepoName {
    pub fn new(owner: &str, name: &str) -> Result<Self, ParseIdError> {
        format!("{owner}/{name}").parse()
    }

    /// The target that is the agent `name` itself (`agent:NAME`).
    pub fn agent(name: &str) -> Result<Self, ParseIdError> {
        format!("{AGENT_TARGET_PREFIX}{name}").parse()
    }

    /// The agent's name when this target is an agent, not a repository.
    pub fn agent_name(&self) -> Option<&str> {
        (self.kind == TargetKind::Agent).then(|| self.name())
    }
    pub fn owner(&self) -> &str {
        &self.full[..self.slash]
    }
    pub fn name(&self) -> &str {
        &self.full[self.slash + 1..]
    }
    pub fn as_str(&self) -> &str {
        &self.full
    }
    /// The same repository: GitHub's names compare case-insensitively.
    pub fn same_as(&self, other: &RepoName) -> bool {
        self.full.eq_ignore_ascii_case(&other.full)
    }
}

fn valid_segment(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for RepoName {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(agent) = s.strip_prefix(AGENT_TARGET_PREFIX) {
            if !valid_segment(agent, 64) {
                return Err(ParseIdError::new("agent target", s));
            }
            return Ok(Self {
                full: s.to_owned(),
                slash: AGENT_TARGET_PREFIX.len() - 1,
                kind: TargetKind::Agent,
            });
        }
        let slash = s
            .find('/')
            .ok_or_else(|| ParseIdError::new("repository name", s))?;
        let (owner, name) = (&s[..slash], &s[slash + 1..]);
        if !valid_segment(owner, 39) || !valid_segment(name, 100) {
            return Err(ParseIdError::new("repository name", s));
        }
        Ok(Self {
            full: s.to_owned(),
            slash,
            kind: TargetKind::Repository,
        })
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl TryFrom<String> for RepoName {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RepoName> for String {
    fn from(r: RepoName) -> Self {
        r.full
    }
}

/// A full 40-character commit sha, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha(String);

impl Sha {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Sha {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseIdError::new("commit sha", s))
        }
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Sha {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Sha> for String {
    fn from(s: Sha) -> Self {
        s.0
    }
}

/// A GitHub App installation (one organization or user account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallationId(pub u64);

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_run_id_round_trips_and_rejects_other_forms() {
        let id = HubRunId::new_random();
        assert_eq!(id.to_string().parse::<HubRunId>().unwrap(), id);
        assert!("not-a-uuid".parse::<HubRunId>().is_err());
        assert!(id.to_string().to_uppercase().parse::<HubRunId>().is_err());
        let simple = id.to_string().replace('-', "");
        assert!(simple.parse::<HubRunId>().is_err());
    }

    #[test]
    fn repo_name_validates_both_segments() {
        let r: RepoName = "acme/svc-0001".parse().unwrap();
        assert_eq!((r.owner(), r.name()), ("acme", "svc-0001"));
        for bad in [
            "acme", "/x", "acme/", "acme/a/b", "acme/a b", "acme/..", "a;b/c",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sha_is_forty_lowercase_hex() {
        assert!("a".repeat(40).parse::<Sha>().is_ok());
        assert!("A".repeat(40).parse::<Sha>().is_err());
        assert!("a".repeat(39).parse::<Sha>().is_err());
    }
}
