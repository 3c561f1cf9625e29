//! GitHub never redelivers a failed webhook on its own. At start and then every
//! `hub.redeliver_every`, the hub lists the App's recent deliveries and asks again for every
//! one that never reached it (no 2xx for any delivery of that GUID). A redelivery keeps its
//! GUID, so one that arrives twice is recorded once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Engine;
use crate::github::HookDelivery;

/// How far back the first sweep looks (GitHub keeps deliveries for a few days).
const FIRST_LOOK_BACK: Duration = Duration::from_secs(24 * 3600);
/// Overlap between sweeps, for deliveries still in progress when the last sweep ran.
const OVERLAP: Duration = Duration::from_secs(120);

/// The newest failed delivery of each GUID that never succeeded, skipping deliveries still
/// on their way and GUIDs already asked for.
pub fn to_redeliver<'a>(
    deliveries: &'a [HookDelivery],
    asked: &HashMap<String, u64>,
) -> Vec<&'a HookDelivery> {
    let mut by_guid: HashMap<&str, Vec<&HookDelivery>> = HashMap::new();
    for d in deliveries {
        by_guid.entry(d.guid.as_str()).or_default().push(d);
    }
    let mut out: Vec<&HookDelivery> = by_guid
        .into_iter()
        .filter(|(guid, ds)| {
            // Asked for before: only again when that redelivery failed too (a newer attempt).
            let newest = ds.iter().map(|d| d.id).max().unwrap_or(0);
            asked.get(*guid).is_none_or(|&id| newest > id)
                && ds.iter().all(|d| d.failed() && !d.pending())
        })
        .filter_map(|(_, ds)| ds.into_iter().max_by_key(|d| (d.delivered_at, d.id)))
        .collect();
    out.sort_by_key(|d| (d.delivered_at, d.id));
    out
}

impl Engine {
    /// Sweeps failed deliveries forever, every `every`.
    pub(super) async fn redeliver_failed(&self, every: Duration) {
        // GUID -> the newest attempt seen when its redelivery was asked for.
        let mut asked: HashMap<String, u64> = HashMap::new();
        let mut since: DateTime<Utc> = Utc::now() - FIRST_LOOK_BACK;
        loop {
            let started = Utc::now();
            match self.sweep(since, &mut asked).await {
                Ok(n) if n > 0 => {
                    tracing::info!(count = n, "asked GitHub to redeliver failed webhooks")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot sweep failed webhook deliveries"
                ),
            }
            since = started - (every + OVERLAP);
            tokio::time::sleep(every).await;
        }
    }

    async fn sweep(
        &self,
        since: DateTime<Utc>,
        asked: &mut HashMap<String, u64>,
    ) -> anyhow::Result<usize> {
        let deliveries = self.inner.github.hook_deliveries(since).await?;
        let mut n = 0;
        for d in to_redeliver(&deliveries, asked) {
            match self.inner.github.redeliver(d.id).await {
                Ok(()) => {
                    asked.insert(d.guid.clone(), d.id);
                    n += 1;
                }
                Err(e) => tracing::warn!(delivery = d.id, error = %e, "cannot redeliver"),
            }
        }
        // Forget GUIDs no longer listed, so the set stays small.
        let listed: HashSet<&str> = deliveries.iter().map(|d| d.guid.as_str()).collect();
        asked.retain(|g, _| listed.contains(g.as_str()));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64, guid: &str, secs: i64, code: u16, status: &str) -> HookDelivery {
        HookDelivery {
            id,
            guid: guid.into(),
            delivered_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            redelivery: false,
            status_code: code,
            status: status.into(),
            event: "workflow_run".into(),
            action: None,
            installation_id: Some(1),
        }
    }

    #[test]
    fn only_guids_that_never_arrived_are_asked_for_once() {
        let list = vec![
            d(1, "ok", 0, 200, "OK"),
            d(2, "dropped", 1, 0, "failed"),
            d(3, "retried-ok", 2, 502, "Invalid HTTP Response: 502"),
            d(4, "retried-ok", 3, 202, "OK"),
            d(5, "twice-failed", 4, 500, "failed"),
            d(6, "twice-failed", 5, 0, "failed"),
            d(7, "on-its-way", 6, 0, "pending"),
            d(8, "asked-before", 7, 0, "failed"),
        ];
        let asked: HashMap<String, u64> = [("asked-before".to_string(), 8)].into();
        let ids: Vec<u64> = to_redeliver(&list, &asked).iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![2, 6]);
    }

    #[test]
    fn a_redelivery_that_failed_too_is_asked_for_again() {
        let mut list = vec![d(1, "lost", 0, 0, "failed")];
        let asked: HashMap<String, u64> = [("lost".to_string(), 1)].into();
        assert!(to_redeliver(&list, &asked).is_empty(), "asked already");
        list.push(d(2, "lost", 60, 503, "failed"));
        let ids: Vec<u64> = to_redeliver(&list, &asked).iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![2]);
        list.push(d(3, "lost", 120, 202, "OK"));
        assert!(
            to_redeliver(&list, &asked).is_empty(),
            "it arrived in the end"
        );
    }
}
