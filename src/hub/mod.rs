//! The domain: runs, spokes, their state machine, selectors, policies and the summary.
//! Nothing in here does I/O.

pub mod ids;
pub mod repo;

pub use ids::{HubRunId, InstallationId, ParseIdError, RepoName, Sha};
pub use repo::{RepoInfo, Visibility};
