//! A hub run's state: its status, the totals over its spokes and the conclusion they lead to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::policy::SuccessThreshold;
use super::spoke::{Spoke, SpokeStatus};

/// Counts of spokes per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub total: usize,
    pub planned: usize,
    pub skipped: usize,
    pub dispatching: usize,
    pub unknown: usize,
    pub dispatched: usize,
    pub running: usize,
    pub retry_wait: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub timed_out: usize,
    pub dispatch_failed: usize,
}

impl Totals {
    pub fn of<'a>(spokes: impl IntoIterator<Item = &'a Spoke>) -> Totals {
        let mut t = Totals::default();
        for s in spokes {
            t.add(s.status);
        }
        t
    }

    /// Counts one more spoke in `status`.
    pub fn add(&mut self, status: SpokeStatus) {
        self.total += 1;
        *self.slot(status) += 1;
    }

    fn slot(&mut self, status: SpokeStatus) -> &mut usize {
        match status {
            SpokeStatus::Planned => &mut self.planned,
            SpokeStatus::Skipped => &mut self.skipped,
            SpokeStatus::Dispatching => &mut self.dispatching,
            SpokeStatus::Unknown => &mut self.unknown,
            SpokeStatus::Dispatched => &mut self.dispatched,
            SpokeStatus::Running => &mut self.running,
            SpokeStatus::RetryWait => &mut self.retry_wait,
            SpokeStatus::Succeeded => &mut self.succeeded,
            SpokeStatus::Failed => &mut self.failed,
            SpokeStatus::Cancelled => &mut self.cancelled,
            SpokeStatus::TimedOut => &mut self.timed_out,
            SpokeStatus::DispatchFailed => &mut self.dispatch_failed,
        }
    }

    /// The count for one status.
    pub fn count(&self, status: SpokeStatus) -> usize {
        let mut copy = *self;
        *copy.slot(status)
    }

    /// Spokes in a terminal status (skipped included).
    pub fn finished(&self) -> usize {
        self.skipped
            + self.succeeded
            + self.failed
            + self.cancelled
            + self.timed_out
            + self.dispatch_failed
    }

    /// Spokes not yet finished: planned, in flight or waiting for a retry.
    pub fn active(&self) -> usize {
        self.total - self.finished()
    }

    pub fn all_terminal(&self) -> bool {
        self.finished() == self.total
    }
}

/// Where a hub run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Planning,
    Active,
    Completed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Planning => "planning",
            RunStatus::Active => "active",
            RunStatus::Completed => "completed",
        }
    }
}

/// How a run reaches its spokes: dispatched to each repository's spoke workflow (`push`),
/// queued for agents that claim them (`pull`), or queued for worker jobs the hub starts in
/// the hub repository with one dispatch (`hybrid`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    #[default]
    Push,
    Pull,
    Hybrid,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Push => "push",
            RunMode::Pull => "pull",
            RunMode::Hybrid => "hybrid",
        }
    }

    /// Whether its spokes are queued for workers to claim (pull, hybrid).
    pub fn is_pulled(self) -> bool {
        self != RunMode::Push
    }
}

impl FromStr for RunMode {
    type Err = ParseRunError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [RunMode::Push, RunMode::Pull, RunMode::Hybrid]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ParseRunError {
                kind: "run mode",
                value: s.chars().take(40).collect(),
            })
    }
}

/// A string that names no status or conclusion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseRunError {
    pub kind: &'static str,
    pub value: String,
}

impl FromStr for RunStatus {
    type Err = ParseRunError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [RunStatus::Planning, RunStatus::Active, RunStatus::Completed]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRunError {
                kind: "run status",
                value: s.chars().take(40).collect(),
            })
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hub run's result, spelled as GitHub check-run conclusions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    Success,
    Failure,
    Neutral,
    Cancelled,
    ActionRequired,
    TimedOut,
}

impl Conclusion {
    pub const ALL: [Conclusion; 6] = [
        Conclusion::Success,
        Conclusion::Failure,
        Conclusion::Neutral,
        Conclusion::Cancelled,
        Conclusion::ActionRequired,
        Conclusion::TimedOut,
    ];

    /// The GitHub check-run `conclusion` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Neutral => "neutral",
            Conclusion::Cancelled => "cancelled",
            Conclusion::ActionRequired => "action_required",
            Conclusion::TimedOut => "timed_out",
        }
    }
}

impl FromStr for Conclusion {
    type Err = ParseRunError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Conclusion::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseRunError {
                kind: "conclusion",
                value: s.chars().take(40).collect(),
            })
    }
}

impl fmt::Display for Conclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The run's conclusion from its totals. Success when the threshold holds over the non-skipped
/// spokes (All: every one succeeded; Any: at least one; Ratio(r): succeeded / non-skipped >= r).
/// No non-skipped spokes -> Neutral. Otherwise: Cancelled when every spoke that did not succeed
/// was cancelled, TimedOut when every such spoke timed out, else Failure.
pub fn conclude(totals: &Totals, threshold: &SuccessThreshold) -> Conclusion {
    let considered = totals.total.saturating_sub(totals.skipped);
    if considered == 0 {
        return Conclusion::Neutral;
    }
    let ok = totals.succeeded;
    let holds = match threshold {
        SuccessThreshold::All => ok == considered,
        SuccessThreshold::Any => ok > 0,
        // Small tolerance so that e.g. 9/10 meets 90% despite float rounding.
        SuccessThreshold::Ratio(r) => ok as f64 >= r * considered as f64 - 1e-9,
    };
    if holds {
        return Conclusion::Success;
    }
    let not_ok = considered - ok;
    if totals.cancelled == not_ok {
        Conclusion::Cancelled
    } else if totals.timed_out == not_ok {
        Conclusion::TimedOut
    } else {
        Conclusion::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spoke(i: usize, status: SpokeStatus) -> Spoke {
        let mut s = Spoke::planned(format!("acme/r{i}").parse().unwrap());
        s.status = status;
        s
    }

    fn totals(counts: &[(SpokeStatus, usize)]) -> Totals {
        let spokes: Vec<Spoke> = counts
            .iter()
            .flat_map(|(st, n)| (0..*n).map(move |i| spoke(i, *st)))
            .collect();
        Totals::of(&spokes)
    }

    #[test]
    fn totals_count_every_status() {
        let counts: Vec<(SpokeStatus, usize)> = SpokeStatus::ALL
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i + 1))
            .collect();
        let t = totals(&counts);
        assert_eq!(t.total, (1..=12).sum::<usize>());
        for (st, n) in &counts {
            assert_eq!(t.count(*st), *n, "{st}");
        }
        // skipped 2 + succeeded 8 + failed 9 + cancelled 10 + timed_out 11 + dispatch_failed 12
        assert_eq!(t.finished(), 2 + 8 + 9 + 10 + 11 + 12);
        assert_eq!(t.active(), 1 + 3 + 4 + 5 + 6 + 7);
        assert!(!t.all_terminal());
        let done = totals(&[(SpokeStatus::Succeeded, 3), (SpokeStatus::Skipped, 1)]);
        assert!(done.all_terminal());
        assert!(Totals::default().all_terminal());
    }

    #[test]
    fn conclusion_follows_the_threshold() {
        use SpokeStatus::*;
        use SuccessThreshold as T;
        let cases = [
            (
                vec![(Succeeded, 10), (Skipped, 5)],
                T::All,
                Conclusion::Success,
            ),
            (
                vec![(Succeeded, 9), (Failed, 1)],
                T::All,
                Conclusion::Failure,
            ),
            (
                vec![(Succeeded, 1), (Failed, 9)],
                T::Any,
                Conclusion::Success,
            ),
            (vec![(Failed, 9), (Skipped, 1)], T::Any, Conclusion::Failure),
            (
                vec![(Succeeded, 9), (Failed, 1)],
                T::Ratio(0.9),
                Conclusion::Success,
            ),
            (
                vec![(Succeeded, 9), (TimedOut, 1), (Failed, 1)],
                T::Ratio(0.9),
                Conclusion::Failure,
            ),
            (
                vec![(Succeeded, 9), (DispatchFailed, 1), (Skipped, 90)],
                T::Ratio(0.9),
                Conclusion::Success,
            ),
            (vec![(Skipped, 4)], T::All, Conclusion::Neutral),
            (vec![], T::Any, Conclusion::Neutral),
            (
                vec![(Succeeded, 2), (Cancelled, 2)],
                T::All,
                Conclusion::Cancelled,
            ),
            (
                vec![(Succeeded, 2), (TimedOut, 2)],
                T::All,
                Conclusion::TimedOut,
            ),
            (
                vec![(Succeeded, 2), (TimedOut, 1), (Cancelled, 1)],
                T::All,
                Conclusion::Failure,
            ),
        ];
        for (counts, threshold, want) in cases {
            let t = totals(&counts);
            assert_eq!(conclude(&t, &threshold), want, "{counts:?} {threshold:?}");
        }
    }

    #[test]
    fn strings_round_trip() {
        for c in Conclusion::ALL {
            assert_eq!(c.as_str().parse::<Conclusion>(), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for r in [RunStatus::Planning, RunStatus::Active, RunStatus::Completed] {
            assert_eq!(r.as_str().parse::<RunStatus>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!("done".parse::<RunStatus>().is_err());
        assert!("ok".parse::<Conclusion>().is_err());
    }
}
