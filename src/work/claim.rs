//! Claiming pulled work: a worker takes queued spokes of active pull runs, each under a lease
//! of its own. The claim is the `Claim` transition, taken under the spoke's row lock, so two
//! workers (on any replicas) never hold live leases on one attempt: the second sees the spoke
//! running under the first's lease and moves on to the next candidate.

use std::collections::HashMap;
use std::time::Duration;

use crate::hub::{apply, HubRunId, Lease, Policy, RepoName, SpokeEvent, TransitionContext};
use crate::store::{now_ms, RunRecord, Store, StoreResult};

/// A spoke attempt a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run: HubRunId,
    pub repo: RepoName,
    pub attempt: u32,
    pub lease: Lease,
}

/// Claims at most `max` queued spokes for `worker`, each under a lease of `ttl`; `policy_of`
/// gives a run's policy (its timeouts bound the lease's spoke). Empty when nothing is queued.
pub async fn claim(
    store: &Store,
    worker: &str,
    max: usize,
    ttl: Duration,
    policy_of: impl Fn(&RunRecord) -> Policy,
) -> StoreResult<Vec<Claimed>> {
    let mut claimed = Vec::new();
    let mut policies: HashMap<HubRunId, Policy> = HashMap::new();
    // More candidates than wanted: others may take some first.
    let candidates = store.queued_work((max * 4).max(16) as i64).await?;
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
            id: uuid::Uuid::new_v4().to_string(),
            worker: worker.to_owned(),
            until: now_ms() + ttl.as_millis() as i64,
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
