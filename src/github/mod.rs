//! Everything the hub says to GitHub (the API client) and hears from it (webhooks).
//!
//! - [`webhook`]: signature check and parsing of the handled events.
//! - [`GitHubApp`] / [`InstallationClient`]: the REST client; all requests go through one
//!   policy (`send`): rate governor, retries of idempotent requests only, pagination by path.

pub mod app;
pub mod client;
pub mod error;
pub mod governor;
mod send;
pub mod types;
pub mod webhook;

pub use app::{GitHubApp, GitHubConfig, HookDelivery};
pub use client::{DispatchOutcome, InstallationClient};
pub use error::ApiError;
pub use governor::GovernorConfig;
pub use send::ClientStats;
pub use types::{CheckRunAction, CheckRunInfo, CheckRunOutput, CheckRunRequest, WorkflowRun};
pub use webhook::{
    parse_event, verify_signature, CheckRunEvent, RepositoryDispatchEvent, SignatureError,
    WebhookEvent, WebhookParseError, WorkflowDispatchEvent, WorkflowRunEvent,
};
