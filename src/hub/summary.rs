//! The check run's text: title, a totals table and a table of every spoke, within GitHub's
//! 65,535-character limits for `output.summary` and `output.text`.

use std::fmt::Write as _;
use std::time::Duration;

use super::policy::format_duration;
use super::run::{Conclusion, RunStatus, Totals};
use super::spoke::{Spoke, SpokeStatus};
use super::HubRunId;

/// GitHub's limit for `output.summary` and `output.text`, in characters.
pub const GITHUB_OUTPUT_LIMIT: usize = 65_535;
/// What this module fills at most, leaving margin below [`GITHUB_OUTPUT_LIMIT`].
pub const OUTPUT_BUDGET: usize = 65_000;
/// Room kept for the closing note line ("… and N more").
const NOTE_RESERVE: usize = 200;
/// Longest reason shown in a table cell, in characters.
const MAX_REASON_CHARS: usize = 300;

/// The `output` object of a check run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutput {
    pub title: String,
    pub summary: String,
    pub text: Option<String>,
}

/// What [`render`] needs besides the spokes.
#[derive(Debug, Clone, Copy)]
pub struct SummaryContext<'a> {
    pub hub_run_id: &'a HubRunId,
    pub task: &'a str,
    /// The selector as the user wrote it (or its canonical form).
    pub targets: &'a str,
    pub status: RunStatus,
    pub conclusion: Option<Conclusion>,
    /// A dry run: the target list only, nothing dispatched.
    pub dry_run: bool,
    /// Unix ms, shown as the update time.
    pub now: i64,
    /// The hub's own page for this run, if any.
    pub run_url: Option<&'a str>,
}

/// A String that knows its length in characters.
#[derive(Default)]
struct Out {
    s: String,
    chars: usize,
}

impl Out {
    fn push(&mut self, piece: &str) {
        self.chars += piece.chars().count();
        self.s.push_str(piece);
    }
    fn fits(&self, piece_chars: usize, reserve: usize) -> bool {
        self.chars + piece_chars + reserve <= OUTPUT_BUDGET
    }
}

/// Escapes text a user controls (inputs, reasons, summaries) for a Markdown table cell or
/// inline text, so that it shows as the characters typed and does nothing: every ASCII
/// punctuation character is backslash-escaped (no emphasis, links, images, autolinks, tables
/// or code spans can start), `<`, `>` and `&` become entities (no HTML), line breaks and
/// control characters become spaces; cut to `max` characters.
pub fn escape_cell(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 2));
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Longest spoke summary shown in a table cell, in characters.
const MAX_SUMMARY_CELL_CHARS: usize = 200;

/// Problems first, then work in progress, then successes and skips.
fn rank(s: SpokeStatus) -> u8 {
    use SpokeStatus as S;
    match s {
        S::Failed => 0,
        S::TimedOut => 1,
        S::DispatchFailed => 2,
        S::Cancelled => 3,
        S::RetryWait => 4,
        S::Running => 5,
        S::Dispatched => 6,
        S::Unknown => 7,
        S::Dispatching => 8,
        S::Planned => 9,
        S::Succeeded => 10,
        S::Skipped => 11,
    }
}

fn icon(s: SpokeStatus) -> &'static str {
    use SpokeStatus as S;
    match s {
        S::Succeeded => "✅",
        S::Failed => "❌",
        S::TimedOut => "⏱️",
        S::DispatchFailed => "🚫",
        S::Cancelled => "⛔",
        S::RetryWait => "🔁",
        S::Running => "🔄",
        S::Dispatched | S::Dispatching | S::Unknown | S::Planned => "⏳",
        S::Skipped => "⏭️",
    }
}

fn label(s: SpokeStatus) -> &'static str {
    match s {
        SpokeStatus::RetryWait => "waiting to retry",
        SpokeStatus::TimedOut => "timed out",
        SpokeStatus::DispatchFailed => "dispatch failed",
        other => other.as_str(),
    }
}

/// A link target we can put in Markdown as is.
fn safe_url(u: &str) -> Option<&str> {
    let ok = (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() <= 2000
        && !u
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "()[]<>|`\"'\\".contains(c));
    ok.then_some(u)
}

fn result_cell(s: &Spoke) -> String {
    let label = label(s.status);
    let icon = icon(s.status);
    let mut cell = match s.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        None => format!("{icon} {label}"),
        // Reasons like "failed: exit 1" or "timed out (running)" already start with the label.
        Some(r) => match r.strip_prefix(label) {
            Some(rest) => match rest.strip_prefix(": ") {
                Some(detail) => {
                    format!("{icon} {label}: {}", escape_cell(detail, MAX_REASON_CHARS))
                }
                None => format!("{icon} {label}{}", escape_cell(rest, MAX_REASON_CHARS)),
            },
            None => format!("{icon} {label}: {}", escape_cell(r, MAX_REASON_CHARS)),
        },
    };
    if let Some(summary) = s.summary.as_deref().filter(|t| !t.trim().is_empty()) {
        cell.push_str(" — ");
        cell.push_str(&escape_cell(summary.trim(), MAX_SUMMARY_CELL_CHARS));
    }
    cell
}

fn run_cell(s: &Spoke) -> String {
    let text = match s.workflow_run_id {
        Some(id) => format!("#{id}"),
        None => "run".to_owned(),
    };
    match s.run_url.as_deref().and_then(safe_url) {
        Some(u) => format!("[{text}]({u})"),
        None if s.workflow_run_id.is_some() => text,
        None => String::new(),
    }
}

fn row(s: &Spoke, dry_run: bool) -> String {
    // A RepoName holds only [A-Za-z0-9._-] and one '/': safe in a table as is.
    let name = s.repo.as_str();
    if dry_run {
        return match s.status {
            SpokeStatus::Skipped => format!("| {name} | {} |\n", result_cell(s)),
            _ => format!("| {name} | 🎯 target |\n"),
        };
    }
    let attempt = if s.attempt > 0 {
        s.attempt.to_string()
    } else {
        String::new()
    };
    let duration = s
        .duration_ms()
        .map(|ms| format_duration(Duration::from_millis(ms as u64)))
        .unwrap_or_default();
    format!(
        "| {name} | {} | {attempt} | {duration} | {} |\n",
        result_cell(s),
        run_cell(s)
    )
}

fn table_header(dry_run: bool) -> &'static str {
    if dry_run {
        "| Repository | Plan |\n|---|---|\n"
    } else {
        "| Repository | Result | Attempt | Duration | Run |\n|---|---|---:|---:|---|\n"
    }
}

fn counts_phrase(t: &Totals) -> String {
    let parts: Vec<String> = [
        (t.succeeded, "succeeded"),
        (t.failed, "failed"),
        (t.timed_out, "timed out"),
        (t.dispatch_failed, "dispatch failed"),
        (t.cancelled, "cancelled"),
        (t.skipped, "skipped"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    parts.join(", ")
}

/// The check run title.
pub fn title(ctx: &SummaryContext, t: &Totals) -> String {
    if ctx.dry_run {
        return format!(
            "Dry run: {} targets, {} skipped",
            t.total - t.skipped,
            t.skipped
        );
    }
    let counts = counts_phrase(t);
    match (ctx.status, ctx.conclusion) {
        (RunStatus::Planning, _) => "Planning…".to_owned(),
        (RunStatus::Completed, Some(c)) => {
            let head = match c {
                Conclusion::Success => "Succeeded",
                Conclusion::Failure => "Failed",
                Conclusion::Neutral => "Nothing to run",
                Conclusion::Cancelled => "Cancelled",
                Conclusion::ActionRequired => "Action required",
                Conclusion::TimedOut => "Timed out",
            };
            if t.total == 0 {
                format!("{head}: no repositories matched")
            } else {
                format!("{head}: {counts}")
            }
        }
        _ if counts.is_empty() => format!("{}/{} done", t.finished(), t.total),
        _ => format!("{}/{} done: {counts}", t.finished(), t.total),
    }
}

fn header(ctx: &SummaryContext, t: &Totals) -> String {
    let mut h = String::new();
    let conclusion = if ctx.dry_run {
        Some(Conclusion::Neutral)
    } else {
        ctx.conclusion
    };
    let _ = write!(
        h,
        "**Task:** {} · **Targets:** {} · **Status:** {}",
        escape_cell(ctx.task, 200),
        if ctx.targets.trim().is_empty() {
            "all".to_owned()
        } else {
            escape_cell(ctx.targets, 500)
        },
        ctx.status
    );
    if let Some(c) = conclusion {
        let _ = write!(h, " · **Conclusion:** {c}");
    }
    h.push('\n');
    let updated = chrono::DateTime::from_timestamp_millis(ctx.now)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let _ = write!(h, "\nHub run `{}`, updated {updated}", ctx.hub_run_id);
    if let Some(u) = ctx.run_url.and_then(safe_url) {
        let _ = write!(h, " · [details]({u})");
    }
    h.push_str("\n\n");
    if ctx.dry_run {
        h.push_str("**Dry run:** nothing was dispatched.\n\n");
        let _ = write!(
            h,
            "| Total | Targets | Skipped |\n|---:|---:|---:|\n| {} | {} | {} |\n",
            t.total,
            t.total - t.skipped,
            t.skipped
        );
    } else {
        let _ = write!(
            h,
            "| Total | Succeeded | Failed | Timed out | Dispatch failed | Cancelled | Skipped | In progress |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            t.total,
            t.succeeded,
            t.failed,
            t.timed_out,
            t.dispatch_failed,
            t.cancelled,
            t.skipped,
            t.active()
        );
    }
    h
}

/// Renders the check run output: problems first, then by repository name. Rows that do not fit
/// in `summary` continue in `text`; what does not fit there ends with "… and N more".
pub fn render(ctx: &SummaryContext, spokes: &[Spoke]) -> CheckOutput {
    let totals = Totals::of(spokes);
    let mut order: Vec<&Spoke> = spokes.iter().collect();
    order.sort_by_cached_key(|s| (rank(s.status), s.repo.as_str().to_ascii_lowercase()));

    let mut summary = Out::default();
    summary.push(&header(ctx, &totals));
    let table = table_header(ctx.dry_run);
    let mut rows = order.into_iter().peekable();
    if rows.peek().is_some() {
        summary.push("\n### Repositories\n\n");
        summary.push(table);
    }
    let mut in_summary = 0usize;
    let mut pending: Option<(String, usize)> = None;
    for s in rows.by_ref() {
        let r = row(s, ctx.dry_run);
        let n = r.chars().count();
        if summary.fits(n, NOTE_RESERVE) {
            summary.push(&r);
            in_summary += 1;
        } else {
            pending = Some((r, n));
            break;
        }
    }
    let Some(first) = pending else {
        return CheckOutput {
            title: title(ctx, &totals),
            summary: summary.s,
            text: None,
        };
    };
    let left = totals.total - in_summary;
    summary.push(&format!(
        "\n_{left} more repositories are listed in the details below._\n"
    ));

    let mut text = Out::default();
    text.push("### Repositories (continued)\n\n");
    text.push(table);
    let mut in_text = 0usize;
    let mut next = Some(first);
    while let Some((r, n)) = next.take() {
        if !text.fits(n, NOTE_RESERVE) {
            break;
        }
        text.push(&r);
        in_text += 1;
        next = rows.next().map(|s| {
            let r = row(s, ctx.dry_run);
            let n = r.chars().count();
            (r, n)
        });
    }
    let more = left - in_text;
    if more > 0 {
        text.push(&format!("\n… and {more} more\n"));
    }
    CheckOutput {
        title: title(ctx, &totals),
        summary: summary.s,
        text: Some(text.s),
    }
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
