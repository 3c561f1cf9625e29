//! Who may start a run: the hub repositories, the refs their hub workflow may run from, and
//! (optionally) the people who may run it. Pure: the engine asks, this module answers.

use super::RepoName;

/// Where runs may come from. Built from `hub.repository`, `hub.allowed_refs` and
/// `hub.allowed_senders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAccess {
    /// The repositories whose hub workflow may start runs (one per installation, usually).
    pub repositories: Vec<RepoName>,
    /// Refs besides the repository's default branch, as `refs/heads/x`, `refs/tags/v*` (a
    /// trailing `*` matches any rest); a bare name means a branch.
    pub allowed_refs: Vec<String>,
    /// Logins who may start runs; `None`: whoever GitHub lets run the hub workflow.
    pub allowed_senders: Option<Vec<String>>,
}

/// Why a trigger was not admitted. Shown in logs and counted; never sent to GitHub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is not a configured hub repository (hub.repository)")]
    NotHubRepository(RepoName),
    #[error("ref {git_ref} is not the default branch ({default_branch}) nor in hub.allowed_refs")]
    RefNotAllowed {
        git_ref: String,
        default_branch: String,
    },
    #[error("ref {0} cannot be checked: the delivery does not name the default branch")]
    DefaultBranchUnknown(String),
    #[error("@{0} is not in hub.allowed_senders")]
    SenderNotAllowed(String),
}

impl Refusal {
    /// A short, stable name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotHubRepository(_) => "not_hub_repository",
            Refusal::RefNotAllowed { .. } | Refusal::DefaultBranchUnknown(_) => "ref_not_allowed",
            Refusal::SenderNotAllowed(_) => "sender_not_allowed",
        }
    }
}

/// `main` -> `refs/heads/main`; full refs stay as they are.
fn full_ref(r: &str) -> String {
    if r.starts_with("refs/") {
        r.to_owned()
    } else {
        format!("refs/heads/{r}")
    }
}

fn ref_matches(pattern: &str, git_ref: &str) -> bool {
    let pattern = full_ref(pattern);
    match pattern.strip_suffix('*') {
        Some(prefix) => git_ref.starts_with(prefix),
        None => pattern == git_ref,
    }
}

impl HubAccess {
    /// Whether `repo` is a configured hub repository (names compare case-insensitively, as
    /// GitHub's do).
    pub fn is_hub(&self, repo: &RepoName) -> bool {
        self.repositories.iter().any(|h| h.same_as(repo))
    }

    /// Whether `sender` may act on runs (start them, press their buttons).
    pub fn sender_allowed(&self, sender: &str) -> bool {
        match &self.allowed_senders {
            Some(allowed) => allowed
                .iter()
                .any(|login| login.eq_ignore_ascii_case(sender)),
            None => true,
        }
    }

    /// Admits a run of the hub workflow from `repo` at `git_ref`, started by `sender`.
    pub fn admit(
        &self,
        repo: &RepoName,
        git_ref: &str,
        default_branch: Option<&str>,
        sender: &str,
    ) -> Result<(), Refusal> {
        if !self.is_hub(repo) {
            return Err(Refusal::NotHubRepository(repo.clone()));
        }
        let git_ref_full = full_ref(git_ref);
        let on_default = match default_branch {
            Some(branch) => git_ref_full == full_ref(branch),
            None => false,
        };
        if !on_default
            && !self
                .allowed_refs
                .iter()
                .any(|p| ref_matches(p, &git_ref_full))
        {
            return Err(match default_branch {
                Some(branch) => Refusal::RefNotAllowed {
                    git_ref: git_ref.to_owned(),
                    default_branch: branch.to_owned(),
                },
                None => Refusal::DefaultBranchUnknown(git_ref.to_owned()),
            });
        }
        if !self.sender_allowed(sender) {
            return Err(Refusal::SenderNotAllowed(sender.to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> HubAccess {
        HubAccess {
            repositories: vec!["acme/platform-hub".parse().unwrap()],
            allowed_refs: vec![],
            allowed_senders: None,
        }
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_hub_repository_on_its_default_branch() {
        let a = access();
        assert_eq!(
            a.admit(
                &repo("acme/platform-hub"),
                "refs/heads/main",
                Some("main"),
                "octocat"
            ),
            Ok(())
        );
        assert_eq!(
            a.admit(
                &repo("ACME/Platform-Hub"),
                "refs/heads/main",
                Some("main"),
                "octocat"
            ),
            Ok(()),
            "GitHub's names are case-insensitive"
        );
        assert_eq!(
            a.admit(
                &repo("acme/svc-0001"),
                "refs/heads/main",
                Some("main"),
                "octocat"
            ),
            Err(Refusal::NotHubRepository(repo("acme/svc-0001")))
        );
        assert_eq!(
            a.admit(
                &repo("other/platform-hub"),
                "refs/heads/main",
                Some("main"),
                "x"
            )
            .unwrap_err()
            .kind(),
            "not_hub_repository"
        );
        let e = a
            .admit(
                &repo("acme/platform-hub"),
                "refs/heads/feature",
                Some("main"),
                "octocat",
            )
            .unwrap_err();
        assert_eq!(e.kind(), "ref_not_allowed");
        assert!(e.to_string().contains("refs/heads/feature"), "{e}");
        // Without the default branch in the delivery, only allowed_refs can admit.
        assert_eq!(
            a.admit(
                &repo("acme/platform-hub"),
                "refs/heads/main",
                None,
                "octocat"
            )
            .unwrap_err()
            .kind(),
            "ref_not_allowed"
        );
    }

    #[test]
    fn allowed_refs_and_senders_widen_and_narrow() {
        let mut a = access();
        a.allowed_refs = vec!["release".into(), "refs/tags/v*".into()];
        let hub = repo("acme/platform-hub");
        assert_eq!(
            a.admit(&hub, "refs/heads/release", Some("main"), "x"),
            Ok(())
        );
        assert_eq!(a.admit(&hub, "refs/tags/v1.2.0", Some("main"), "x"), Ok(()));
        assert!(a
            .admit(&hub, "refs/heads/release-2", Some("main"), "x")
            .is_err());
        assert!(a.admit(&hub, "refs/tags/x1", Some("main"), "x").is_err());
        a.allowed_senders = Some(vec!["Octocat".into()]);
        assert_eq!(
            a.admit(&hub, "refs/heads/main", Some("main"), "octocat"),
            Ok(())
        );
        assert_eq!(
            a.admit(&hub, "refs/heads/main", Some("main"), "mallory"),
            Err(Refusal::SenderNotAllowed("mallory".into()))
        );
    }
}
