//! A run as people and programs read it: the API's JSON, `spokehub status` and the demo.

use serde::Serialize;

use crate::hub::{HubRunId, Spoke, SpokeStatus, Totals};
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

/// Spoke statuses that are problems, in the order they are listed.
const PROBLEMS: [SpokeStatus; 4] = [
    SpokeStatus::Failed,
    SpokeStatus::TimedOut,
    SpokeStatus::DispatchFailed,
    SpokeStatus::Cancelled,
];

/// Problems first, then work in progress, then successes and skips.
pub fn rank(s: SpokeStatus) -> usize {
    use SpokeStatus as S;
    PROBLEMS.iter().position(|p| *p == s).unwrap_or(match s {
        S::RetryWait => 4,
        S::Running => 5,
        S::Dispatched => 6,
        S::Unknown => 7,
        S::Dispatching => 8,
        S::Planned => 9,
        S::Succeeded => 10,
        _ => 11,
    })
}

pub fn is_problem(s: SpokeStatus) -> bool {
    PROBLEMS.contains(&s)
}

/// Text from GitHub or a spoke, made safe for a terminal: control characters (escape
/// sequences, carriage returns, newlines) are shown escaped, and long text is cut.
fn plain(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.trim().chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A spoke status as people say it.
pub fn label(s: SpokeStatus, dry_run: bool) -> &'static str {
    match s {
        SpokeStatus::Planned if dry_run => "target",
        SpokeStatus::RetryWait => "waiting to retry",
        SpokeStatus::TimedOut => "timed out",
        SpokeStatus::DispatchFailed => "dispatch failed",
        other => other.as_str(),
    }
}

/// Longest reason shown, in characters.
const MAX_REASON: usize = 200;

impl RunReport {
    /// The run and its totals, in two or three lines.
    pub fn headline(&self) -> String {
        let t = &self.totals;
        let run = &self.run;
        let conclusion = run
            .conclusion
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        if run.dry_run {
            return format!(
                "run {} ({}): dry run, {}{conclusion}\n  task {}: {} targets, {} skipped; nothing was dispatched\n",
                run.id,
                plain(&run.task, 100),
                run.status.as_str(),
                plain(&run.task, 100),
                t.total - t.skipped,
                t.skipped,
            );
        }
        let mut out = format!(
            "run {} ({}): {}{conclusion}\n  task {} on {} spokes: {} succeeded, {} failed, {} timed out, {} dispatch failed, {} cancelled, {} skipped, {} in progress\n",
            run.id,
            plain(&run.task, 100),
            run.status.as_str(),
            plain(&run.task, 100),
            t.total,
            t.succeeded,
            t.failed,
            t.timed_out,
            t.dispatch_failed,
            t.cancelled,
            t.skipped,
            t.active(),
        );
        // A run that stopped for a reason of its own (planning failed, cancelled, deadline).
        if let Some(reason) = run.reason.as_deref().filter(|r| !r.trim().is_empty()) {
            out.push_str(&format!("  stopped: {}\n", plain(reason, 1000)));
        }
        out
    }

    /// For `spokehub status`: the headline, then every problem spoke with its result, attempt,
    /// run link and reason.
    pub fn to_text(&self) -> String {
        let mut out = self.headline();
        let problems: Vec<&Spoke> = self.ordered().filter(|s| is_problem(s.status)).collect();
        if !problems.is_empty() {
            out.push_str(&format!("\n{} problem spokes:\n", problems.len()));
            out.push_str(&self.rows(&problems));
        }
        out
    }

    /// For the demo: the headline and a table of at most `max_rows` spokes, problems first,
    /// then "… and N more" (`max_rows` 0: every spoke).
    pub fn to_table(&self, max_rows: usize) -> String {
        let mut out = self.headline();
        let all: Vec<&Spoke> = self.ordered().collect();
        if all.is_empty() {
            return out;
        }
        let shown = if max_rows == 0 {
            all.len()
        } else {
            max_rows.min(all.len())
        };
        out.push('\n');
        out.push_str(&self.rows(&all[..shown]));
        let more = all.len() - shown;
        if more > 0 {
            out.push_str(&format!("  … and {more} more\n"));
        }
        out
    }

    /// Spokes problems first, then by repository name.
    fn ordered(&self) -> impl Iterator<Item = &Spoke> {
        let mut v: Vec<&Spoke> = self.spokes.iter().collect();
        v.sort_by_cached_key(|s| (rank(s.status), s.repo.as_str().to_ascii_lowercase()));
        v.into_iter()
    }

    /// Aligned rows: repository, result, attempt, run link, reason.
    fn rows(&self, spokes: &[&Spoke]) -> String {
        let dry_run = self.run.dry_run;
        let cells: Vec<[String; 5]> = spokes
            .iter()
            .map(|s| {
                [
                    s.repo.as_str().to_owned(),
                    label(s.status, dry_run).to_owned(),
                    if s.attempt > 0 {
                        format!("attempt {}", s.attempt)
                    } else {
                        String::new()
                    },
                    s.run_url
                        .as_deref()
                        .map(|u| plain(u, 300))
                        .unwrap_or_default(),
                    s.reason
                        .as_deref()
                        .map(|r| plain(r, MAX_REASON))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        let width = |i: usize| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2), width(3)];
        let mut out = String::new();
        for c in &cells {
            let mut line = String::from("  ");
            for (i, w) in widths.iter().enumerate() {
                if *w > 0 {
                    line.push_str(&format!("{:<w$}  ", c[i], w = *w));
                }
            }
            line.push_str(&c[4]);
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{HubRunId, InstallationId, RunStatus};

    fn spoke(name: &str, status: SpokeStatus, attempt: u32, reason: Option<&str>) -> Spoke {
        let mut s = Spoke::planned(format!("acme/{name}").parse().unwrap());
        s.status = status;
        s.attempt = attempt;
        s.reason = reason.map(str::to_owned);
        if attempt > 0 {
            s.workflow_run_id = Some(100 + attempt as u64);
            s.run_url = Some(format!(
                "https://github.com/acme/{name}/actions/runs/{}",
                100 + attempt
            ));
        }
        s
    }

    fn report(dry_run: bool, spokes: Vec<Spoke>) -> RunReport {
        RunReport {
            run: RunRecord {
                id: HubRunId::new_random(),
                installation_id: InstallationId(1),
                hub_repo: "acme/hub".parse().unwrap(),
                task: "scan".into(),
                targets: String::new(),
                params: "{}".into(),
                dry_run,
                git_ref: "main".into(),
                head_sha: None,
                sender: "octocat".into(),
                status: RunStatus::Completed,
                conclusion: Some(if dry_run { "neutral" } else { "failure" }.into()),
                cancel_requested: false,
                reason: dry_run.then(|| "dry run".into()),
                check_run_id: None,
                created_at: 0,
                deadline_at: 0,
                completed_at: None,
                mode: crate::hub::RunMode::Push,
            },
            totals: Totals::of(&spokes),
            spokes,
        }
    }

    fn mixed() -> Vec<Spoke> {
        vec![
            spoke("a-ok", SpokeStatus::Succeeded, 1, None),
            spoke("b-ok", SpokeStatus::Succeeded, 1, None),
            spoke("c-skip", SpokeStatus::Skipped, 0, Some("archived")),
            spoke("z-fail", SpokeStatus::Failed, 2, Some("failed: exit 1")),
            spoke(
                "y-late",
                SpokeStatus::TimedOut,
                1,
                Some("timed out (running)"),
            ),
            spoke(
                "x-nodisp",
                SpokeStatus::DispatchFailed,
                1,
                Some("Workflow does not have 'workflow_dispatch' trigger"),
            ),
        ]
    }

    #[test]
    fn status_lists_every_problem_with_reason_attempt_and_run_link() {
        let text = report(false, mixed()).to_text();
        assert!(text.contains("3 problem spokes:"), "{text}");
        let line = text
            .lines()
            .find(|l| l.contains("acme/z-fail"))
            .expect("the failed spoke");
        assert!(
            line.contains("failed")
                && line.contains("attempt 2")
                && line.contains("https://github.com/acme/z-fail/actions/runs/102")
                && line.contains("exit 1"),
            "{line}"
        );
        assert!(text.contains("acme/y-late") && text.contains("timed out (running)"));
        assert!(text.contains("acme/x-nodisp") && text.contains("workflow_dispatch"));
        assert!(
            !text.contains("acme/a-ok") && !text.contains("c-skip"),
            "{text}"
        );
        // Problems in the order failed, timed out, dispatch failed.
        let at = |n: &str| text.find(n).unwrap();
        assert!(at("z-fail") < at("y-late") && at("y-late") < at("x-nodisp"));
    }

    #[test]
    fn a_dry_run_says_so_and_counts_targets() {
        let spokes = vec![
            spoke("a", SpokeStatus::Planned, 0, None),
            spoke("b", SpokeStatus::Planned, 0, None),
            spoke("c", SpokeStatus::Skipped, 0, Some("no spoke workflow")),
        ];
        let r = report(true, spokes);
        let text = r.to_text();
        assert!(text.contains("dry run"), "{text}");
        assert!(
            text.contains("2 targets, 1 skipped; nothing was dispatched"),
            "{text}"
        );
        assert!(!text.contains("in progress"), "{text}");
        let table = r.to_table(0);
        assert!(table.contains("acme/a  target"), "{table}");
    }

    #[test]
    fn the_table_puts_problems_first_and_says_how_many_more() {
        let mut spokes = mixed();
        for i in 0..40 {
            spokes.push(spoke(
                &format!("svc-{i:02}"),
                SpokeStatus::Succeeded,
                1,
                None,
            ));
        }
        let table = report(false, spokes).to_table(5);
        let rows: Vec<&str> = table.lines().filter(|l| l.contains("acme/")).collect();
        assert_eq!(rows.len(), 5, "{table}");
        assert!(rows[0].contains("acme/z-fail"), "{table}");
        assert!(rows[1].contains("acme/y-late"), "{table}");
        assert!(rows[2].contains("acme/x-nodisp"), "{table}");
        assert!(rows[3].contains("acme/a-ok"), "{table}");
        assert!(table.contains("… and 41 more"), "{table}");
        let all = report(false, mixed()).to_table(0);
        assert!(!all.contains("more"), "{all}");
    }

    #[test]
    fn text_from_outside_cannot_drive_the_terminal() {
        let spokes = vec![spoke(
            "evil",
            SpokeStatus::Failed,
            1,
            Some("failed: \u{1b}[2J\rgotcha\nsecond line"),
        )];
        let text = report(false, spokes).to_text();
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        assert!(text.contains("gotcha"), "{text}");
        assert_eq!(
            text.lines().filter(|l| l.contains("gotcha")).count(),
            1,
            "{text}"
        );
    }
}
