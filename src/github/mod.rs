//! Everything the hub says to GitHub (the API client) and hears from it (webhooks).
//!
//! - [`webhook`]: signature check and parsing of the handled events.
//! - [`GitHubApp`] / [`InstallationClient`]: the REST client; all requests go through one
//!   policy (`send`): rate governor, retries of idempotent requests only, pagination by path.
//!
//! octocrab 0.54 facts this relies on (checked in its source): the crate is built without its
//! `retry` feature, so it never resends on its own; on a 401 with an installation token it
//! clears the token, mints a new one and resends once (the only resend it does); it adds the
//! `Authorization` header only to URIs without a host or for `api.github.com`, so requests go
//! out as paths on the configured base URI; its token-mint answer must carry `permissions`
//! (real GitHub always does; an emulator must too).

pub mod app;
pub mod client;
pub mod error;
pub mod governor;
mod send;
pub mod shared_rate;
pub mod types;
pub mod webhook;

pub use app::{
    ApiVersion, CredentialsError, GitHubApp, GitHubConfig, HookDelivery, NarrowedToken,
    UnknownApiVersion,
};
pub use client::{DispatchOutcome, InstallationClient};
pub use error::ApiError;
pub use governor::GovernorConfig;
pub use send::ClientStats;
pub use shared_rate::{RateLedger, SharedRate, WriteTurn};
pub use types::{CheckRunAction, CheckRunInfo, CheckRunOutput, CheckRunRequest, WorkflowRun};
pub use webhook::{
    parse_event, signature_digest, verify_signature, CheckRunEvent, RepositoryDispatchEvent,
    SignatureError, WebhookEvent, WebhookParseError, WorkflowDispatchEvent, WorkflowRunEvent,
};
