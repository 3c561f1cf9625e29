//! The domain: runs, spokes, their state machine, selectors, policies and the summary.
//! Nothing in here does I/O; time comes in as `now: i64` (unix milliseconds).

pub mod access;
pub mod ids;
pub mod policy;
pub mod repo;
pub mod run;
pub mod selector;
pub mod spoke;
pub mod summary;

pub use access::{HubAccess, Refusal};
pub use ids::{HubRunId, InstallationId, ParseIdError, RepoName, Sha};
pub use policy::{
    format_duration, parse_duration, DurationError, Policy, PolicyError, PolicyOverrides,
    RetryOverrides, RetryPolicy, SuccessThreshold, ThresholdSpec, Timeouts,
};
pub use repo::{RepoInfo, Visibility};
pub use run::{conclude, Conclusion, ParseRunError, RunMode, RunStatus, Totals};
pub use selector::{Selector, SelectorError, Verdict};
pub use spoke::{
    apply, callback_closed, is_renewal, pulled_due_event, scheduled_due, Channel, Lease,
    ParseStatusError, ReportOutcome, Spoke, SpokeEvent, SpokeStatus, Transition, TransitionContext,
};
pub use summary::{escape_cell, render, CheckOutput, SummaryContext};
