//! Rate-limit state shared by every replica of the hub (the ledger provides it on Postgres):
//! an installation's writes go out one at a time across all replicas, and a wait GitHub asked
//! for (`retry-after`, a spent quota) is seen by every replica, so none sends while told to
//! wait.

use std::sync::Arc;

use futures::future::BoxFuture;

/// What the shared ledger offers the HTTP layer.
pub trait RateLedger: Send + Sync + 'static {
    /// Waits for this installation's write turn across every replica. The turn is held until
    /// it is dropped, which gives it back.
    fn write_turn(&self, installation: u64) -> BoxFuture<'_, anyhow::Result<WriteTurn>>;
    /// The end of the wait GitHub asked for (unix ms), if one is recorded.
    fn paused_until(&self, installation: u64) -> BoxFuture<'_, anyhow::Result<Option<i64>>>;
    /// Records a wait until `until_ms` (unix ms) for every replica (a later end wins).
    fn pause(&self, installation: u64, until_ms: i64) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// One installation's turn to write, across every replica; given back when dropped.
pub struct WriteTurn {
    /// The wait GitHub asked for, as recorded when the turn was taken (unix ms).
    pub paused_until: Option<i64>,
    _held: Box<dyn Send + Sync>,
}

impl WriteTurn {
    pub fn new(paused_until: Option<i64>, held: impl Send + Sync + 'static) -> Self {
        WriteTurn {
            paused_until,
            _held: Box::new(held),
        }
    }
}

/// A shared [`RateLedger`], for [`super::GitHubConfig::shared_rate`].
#[derive(Clone)]
pub struct SharedRate(pub Arc<dyn RateLedger>);

impl std::fmt::Debug for SharedRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRate")
    }
}
