//! Everything the hub says to GitHub (the API client) and hears from it (webhooks).

pub mod governor;
pub mod types;
pub mod webhook;

pub use types::{CheckRunAction, CheckRunInfo, CheckRunOutput, CheckRunRequest, WorkflowRun};
pub use webhook::{
    parse_event, verify_signature, CheckRunEvent, RepositoryDispatchEvent, SignatureError,
    WebhookEvent, WebhookParseError, WorkflowDispatchEvent, WorkflowRunEvent,
};
