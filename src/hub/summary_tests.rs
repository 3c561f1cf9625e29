use super::*;

fn spoke(name: &str, status: SpokeStatus) -> Spoke {
    let mut s = Spoke::planned(format!("acme/{name}").parse().unwrap());
    s.status = status;
    if status != SpokeStatus::Planned && status != SpokeStatus::Skipped {
        s.attempt = 1;
        s.dispatched_at = Some(1_000);
    }
    if status.is_terminal() && status != SpokeStatus::Skipped {
        s.finished_at = Some(66_000);
    }
    s
}

fn ctx<'a>(
    id: &'a HubRunId,
    status: RunStatus,
    conclusion: Option<Conclusion>,
) -> SummaryContext<'a> {
    SummaryContext {
        hub_run_id: id,
        task: "bump-deps",
        targets: "topic:go",
        status,
        conclusion,
        dry_run: false,
        now: 1_764_035_400_000,
        run_url: Some("https://hub.example/runs/1"),
    }
}

/// The repository names of the table rows, in order.
fn row_names(md: &str) -> Vec<String> {
    md.lines()
        .filter(|l| l.starts_with("| acme/"))
        .map(|l| l[2..].split(" |").next().unwrap().to_owned())
        .collect()
}

#[test]
fn small_run_in_progress() {
    let id = HubRunId::new_random();
    let mut failed = spoke("zeta", SpokeStatus::Failed);
    failed.reason = Some("failed: exit | 1\nsee log".into());
    failed.attempt = 3;
    failed.workflow_run_id = Some(42);
    failed.run_url = Some("https://github.com/acme/zeta/actions/runs/42".into());
    let mut skipped = spoke("aaa", SpokeStatus::Skipped);
    skipped.reason = Some("archived".into());
    let spokes = vec![
        spoke("beta", SpokeStatus::Succeeded),
        spoke("alpha", SpokeStatus::Succeeded),
        skipped,
        spoke("run1", SpokeStatus::Running),
        failed,
        {
            let mut t = spoke("gone", SpokeStatus::TimedOut);
            t.reason = Some("timed out (running)".into());
            t
        },
        spoke("nope", SpokeStatus::DispatchFailed),
        spoke("stop", SpokeStatus::Cancelled),
        spoke("wait", SpokeStatus::Planned),
        spoke("svc_x", SpokeStatus::Planned),
        spoke("alpha2", SpokeStatus::Failed),
    ];
    let out = render(&ctx(&id, RunStatus::Active, None), &spokes);
    assert_eq!(
        out.title,
        "8/11 done: 2 succeeded, 2 failed, 1 timed out, 1 dispatch failed, 1 cancelled, 1 skipped"
    );
    assert!(out.text.is_none());
    assert_eq!(
        row_names(&out.summary),
        [
            "acme/alpha2",
            "acme/zeta",
            "acme/gone",
            "acme/nope",
            "acme/stop",
            "acme/run1",
            "acme/svc_x",
            "acme/wait",
            "acme/alpha",
            "acme/beta",
            "acme/aaa"
        ]
    );
    let zeta = out
        .summary
        .lines()
        .find(|l| l.starts_with("| acme/zeta"))
        .unwrap();
    assert_eq!(
        zeta,
        "| acme/zeta | ❌ failed: exit \\| 1 see log | 3 | 1m 05s | \
         [#42](https://github.com/acme/zeta/actions/runs/42) |"
    );
    assert_eq!(
        zeta.matches(" | ").count() + 2,
        6,
        "cells stay in their columns"
    );
    let gone = out
        .summary
        .lines()
        .find(|l| l.starts_with("| acme/gone"))
        .unwrap();
    assert!(
        gone.starts_with("| acme/gone | ⏱️ timed out \\(running\\) | 1 |"),
        "{gone}"
    );
    assert!(
        out.summary.contains("| acme/svc_x |"),
        "repository names are shown as is"
    );
    let stop = out
        .summary
        .lines()
        .find(|l| l.starts_with("| acme/stop"))
        .unwrap();
    assert!(
        stop.starts_with("| acme/stop | ⛔ cancelled | 1 |"),
        "{stop}"
    );
    assert!(
        out.summary.contains("| 11 | 2 | 2 | 1 | 1 | 1 | 1 | 3 |"),
        "{}",
        out.summary
    );
    assert!(out.summary.contains(&id.to_string()));
    assert!(out
        .summary
        .contains("[details](https://hub.example/runs/1)"));
    assert!(
        out.summary.contains("2025-11-25 01:50:00 UTC"),
        "{}",
        out.summary
    );
}

#[test]
fn completed_title_names_the_result() {
    let id = HubRunId::new_random();
    let spokes = vec![
        spoke("a", SpokeStatus::Succeeded),
        spoke("b", SpokeStatus::Failed),
    ];
    let out = render(
        &ctx(&id, RunStatus::Completed, Some(Conclusion::Failure)),
        &spokes,
    );
    assert_eq!(out.title, "Failed: 1 succeeded, 1 failed");
    assert!(out.summary.contains("**Conclusion:** failure"));
    let none = render(
        &ctx(&id, RunStatus::Completed, Some(Conclusion::Neutral)),
        &[],
    );
    assert_eq!(none.title, "Nothing to run: no repositories matched");
    assert!(!none.summary.contains("| Repository |"));
}

#[test]
fn dry_run_lists_targets_with_neutral_conclusion() {
    let id = HubRunId::new_random();
    let mut c = ctx(&id, RunStatus::Completed, None);
    c.dry_run = true;
    let mut fork = spoke("f", SpokeStatus::Skipped);
    fork.reason = Some("fork".into());
    let out = render(&c, &[spoke("x", SpokeStatus::Planned), fork]);
    assert_eq!(out.title, "Dry run: 1 targets, 1 skipped");
    assert!(out.summary.contains("**Conclusion:** neutral"));
    assert!(out.summary.contains("| acme/x | 🎯 target |"));
    assert!(out.summary.contains("| acme/f | ⏭️ skipped: fork |"));
}

#[test]
fn escapes_cells() {
    assert_eq!(escape_cell("a|b\r\nc", 100), "a\\|b  c");
    assert_eq!(escape_cell("<script>&", 100), "&lt;script&gt;&amp;");
    assert_eq!(
        escape_cell("[x](y) *b* `c`", 100),
        "\\[x\\]\\(y\\) \\*b\\* \\`c\\`"
    );
    assert_eq!(
        escape_cell("![i](https://e.example/y.png) www.e.example @me #1", 100),
        "\\!\\[i\\]\\(https\\:\\/\\/e\\.example\\/y\\.png\\) www\\.e\\.example \\@me \\#1"
    );
    assert_eq!(escape_cell("ééééé", 3), "ééé…");
}

#[test]
fn unsafe_run_urls_are_not_linked() {
    let id = HubRunId::new_random();
    let mut s = spoke("a", SpokeStatus::Succeeded);
    s.workflow_run_id = Some(5);
    s.run_url = Some("javascript:alert(1)".into());
    let out = render(&ctx(&id, RunStatus::Active, None), &[s]);
    let line = out
        .summary
        .lines()
        .find(|l| l.starts_with("| acme/a"))
        .unwrap();
    assert!(line.ends_with("| #5 |"), "{line}");
}

fn check_limits(out: &CheckOutput, total: usize) -> (usize, usize, usize) {
    assert!(out.summary.chars().count() <= GITHUB_OUTPUT_LIMIT);
    let in_summary = row_names(&out.summary).len();
    let (in_text, more) = match &out.text {
        None => (0, 0),
        Some(t) => {
            assert!(t.chars().count() <= GITHUB_OUTPUT_LIMIT);
            let more = t
                .lines()
                .find_map(|l| l.strip_prefix("… and "))
                .map(|r| r.trim_end_matches(" more").parse::<usize>().unwrap())
                .unwrap_or(0);
            (row_names(t).len(), more)
        }
    };
    assert_eq!(
        in_summary + in_text + more,
        total,
        "every spoke is accounted for"
    );
    (in_summary, in_text, more)
}

#[test]
fn ten_thousand_spokes_split_over_summary_and_text() {
    let id = HubRunId::new_random();
    let spokes: Vec<Spoke> = (0..10_000)
        .map(|i| {
            let st = if i % 10 == 0 {
                SpokeStatus::Failed
            } else {
                SpokeStatus::Succeeded
            };
            spoke(&format!("svc-{i:05}"), st)
        })
        .collect();
    let out = render(&ctx(&id, RunStatus::Active, None), &spokes);
    assert_eq!(out.title, "10000/10000 done: 9000 succeeded, 1000 failed");
    let (s, t, more) = check_limits(&out, 10_000);
    assert!(s > 100 && t > 100 && more > 0, "{s} {t} {more}");
    // Problems come first: all 1000 failures are in the summary.
    let names = row_names(&out.summary);
    assert!(
        names[..1000].iter().all(|n| n.ends_with('0')),
        "failures first"
    );
    assert_eq!(names[0], "acme/svc-00000");
    assert!(out
        .summary
        .contains("more repositories are listed in the details below"));
}

#[test]
fn long_multibyte_reasons_respect_the_character_limit() {
    let id = HubRunId::new_random();
    let spokes: Vec<Spoke> = (0..2_000)
        .map(|i| {
            let mut s = spoke(&format!("r{i:04}"), SpokeStatus::Failed);
            s.reason = Some(format!("failed: {}", "é|".repeat(5_000)));
            s
        })
        .collect();
    let out = render(&ctx(&id, RunStatus::Active, None), &spokes);
    let (s, t, more) = check_limits(&out, 2_000);
    assert!(s > 0 && t > 0 && more > 0);
    // Counted in characters: the byte length is well over the limit.
    assert!(out.summary.len() > GITHUB_OUTPUT_LIMIT);
    let line = out
        .summary
        .lines()
        .find(|l| l.starts_with("| acme/r0000"))
        .unwrap();
    assert!(line.contains('…') && line.chars().count() < 1_000);
}

#[test]
fn everything_fits_without_text_for_small_runs() {
    let id = HubRunId::new_random();
    let spokes: Vec<Spoke> = (0..10)
        .map(|i| spoke(&format!("r{i}"), SpokeStatus::Succeeded))
        .collect();
    let out = render(
        &ctx(&id, RunStatus::Completed, Some(Conclusion::Success)),
        &spokes,
    );
    assert_eq!(out.title, "Succeeded: 10 succeeded");
    assert_eq!(check_limits(&out, 10), (10, 0, 0));
}

#[test]
fn an_empty_selector_shows_as_all_targets() {
    let id = HubRunId::new_random();
    let mut c = ctx(&id, RunStatus::Active, None);
    c.targets = "";
    let out = render(&c, &[spoke("a", SpokeStatus::Running)]);
    assert!(
        out.summary.contains("**Targets:** all ·"),
        "{}",
        out.summary
    );
    let c = ctx(&id, RunStatus::Active, None);
    let out = render(&c, &[spoke("a", SpokeStatus::Running)]);
    assert!(
        out.summary.contains("**Targets:** topic\\:go ·"),
        "{}",
        out.summary
    );
}
