//! Claiming pulled work: a worker takes queued spokes of active pull runs, each under a lease
//! of its own. The claim is the `Claim` transition, taken under the spoke's row lock, so two
//! workers (on any replicas) never hold live leases on one attempt: the second sees the spoke
//! running under the first's lease and moves on to the next candidate.

use std::collections::HashMap;
use std::time::Duration;

use crate::hub::{apply, HubRunId, Lease, Policy, RepoName, SpokeEvent, TransitionContext};
use crate::store::{now_ms, RunRecord, Store, StoreResult, WorkScope};

/// A new lease's id: its run's id (so that a result arriving after the lease is gone is still
/// recorded against its run) and 128 random bits.
fn lease_id(run: &HubRunId) -> String {
    format!("{run}.{}", uuid::Uuid::new_v4().simple())
}

/// The run a lease id names, if it is one.
pub fn run_of_lease(lease_id: &str) -> Option<HubRunId> {
    let (run, rest) = lease_id.split_once('.')?;
    (rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| run.parse().ok())
        .flatten()
}

pub(crate) fn lease_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A spoke attempt a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run: HubRunId,
    pub repo: RepoName,
    pub attempt: u32,
    pub lease: Lease,
}

/// Claims at most `max` spokes queued for `scope` for `worker`, each under a lease as long as
/// its run's `work_lease`; `policy_of` gives a run's policy. Empty when nothing is queued.
pub async fn claim(
    store: &Store,
    scope: &WorkScope,
    worker: &str,
    max: usize,
    policy_of: impl Fn(&RunRecord) -> Policy,
) -> StoreResult<Vec<Claimed>> {
    let mut claimed = Vec::new();
    let mut policies: HashMap<HubRunId, Policy> = HashMap::new();
    // More candidates than wanted: others may take some first.
    let candidates = store.queued_work(scope, (max * 4).max(16) as i64).await?;
    for (run, repo) in candidates {
        if claimed.len() >= max {
            break;
        }
        let policy = match policies.get(&run) {
            Some(p) => p.clone(),
            None => {
                let Some(record) = store.run(&run).await? else {
                    continue;
                };
                let p = policy_of(&record);
                policies.insert(run, p.clone());
                p
            }
        };
        let lease = Lease {
            id: lease_id(&run),
            worker: worker.to_owned(),
            until: now_ms() + lease_ms(policy.work_lease),
        };
        let wanted = lease.clone();
        let rec = store
            .transition(&run, &repo, move |s| {
                apply(
                    s,
                    SpokeEvent::Claim {
                        lease: wanted.clone(),
                    },
                    &TransitionContext {
                        now: now_ms(),
                        policy: &policy,
                    },
                )
            })
            .await?;
        let current = rec.current();
        if current.lease.as_ref().is_some_and(|l| l.id == lease.id) {
            claimed.push(Claimed {
                run,
                repo,
                attempt: current.attempt,
                lease,
            });
        }
    }
    Ok(claimed)
}
