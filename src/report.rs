//! A run as people and programs read it: the API's JSON, `spokehub status` and the demo.

use serde::Serialize;

use crate::hub::{HubRunId, Spoke, Totals};
use crate::store::{RunRecord, Store, StoreResult};

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub run: RunRecord,
    pub totals: Totals,
    pub spokes: Vec<Spoke>,
}

/// Reads a run with every spoke; None when there is no such run.
pub async fn run_report(store: &Store, id: &HubRunId) -> StoreResult<Option<RunReport>> {
    let Some(run) = store.run(id).await? else {
        return Ok(None);
    };
    let spokes: Vec<Spoke> = store
        .spokes(id)
        .await?
        .into_iter()
        .map(|r| r.spoke)
        .collect();
    Ok(Some(RunReport {
        totals: Totals::of(&spokes),
        run,
        spokes,
    }))
}

impl RunReport {
    /// A short human summary: one line of totals, then problems.
    pub fn to_text(&self) -> String {
        let t = &self.totals;
        let mut out = format!(
            "run {} ({}): {}{}\n  task {} on {} spokes: {} succeeded, {} failed, {} timed out, {} dispatch failed, {} cancelled, {} skipped, {} in progress\n",
            self.run.id,
            self.run.task,
            self.run.status.as_str(),
            self.run
                .conclusion
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            self.run.task,
            t.total,
            t.succeeded,
            t.failed,
            t.timed_out,
            t.dispatch_failed,
            t.cancelled,
            t.skipped,
            t.total - t.finished(),
        );
        for s in self.spokes.iter().filter(|s| {
            matches!(
                s.status.as_str(),
                "failed" | "timed_out" | "dispatch_failed" | "cancelled"
            )
        }) {
            out.push_str(&format!(
                "  {:<40} {:<16} {}\n",
                s.repo.as_str(),
                s.status.as_str(),
                s.reason.as_deref().unwrap_or("")
            ));
        }
        out
    }
}
