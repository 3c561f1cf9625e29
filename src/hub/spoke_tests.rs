use super::*;
use crate::hub::policy::Policy;

const QUEUED: i64 = 15 * 60_000;
const RUNNING: i64 = 60 * 60_000;

fn repo() -> RepoName {
    "acme/svc-1".parse().unwrap()
}

fn go(spoke: &Spoke, ev: SpokeEvent, now: i64) -> Transition {
    apply(
        spoke,
        ev,
        &TransitionContext {
            now,
            policy: &Policy::default(),
        },
    )
}

fn changed(t: Transition) -> Spoke {
    match t {
        Transition::Changed(s) => s,
        other => panic!("expected Changed, got {other:?}"),
    }
}

fn rep(attempt: u32, outcome: ReportOutcome) -> SpokeEvent {
    SpokeEvent::Report {
        attempt,
        run_id: None,
        run_url: None,
        outcome,
        channel: Channel::Callback,
        summary: None,
    }
}

fn rep_run(attempt: u32, run: u64, outcome: ReportOutcome) -> SpokeEvent {
    SpokeEvent::Report {
        attempt,
        run_id: Some(run),
        run_url: Some(format!("https://github.com/acme/svc-1/actions/runs/{run}")),
        outcome,
        channel: Channel::WorkflowRun,
        summary: None,
    }
}

fn failed(detail: &str) -> ReportOutcome {
    ReportOutcome::Failed {
        detail: Some(detail.into()),
    }
}

fn accepted(run: u64) -> SpokeEvent {
    SpokeEvent::DispatchAccepted {
        run_id: Some(run),
        run_url: Some(format!("https://x/runs/{run}")),
    }
}

/// A spoke dispatched at t=1000 as attempt 1 and accepted with run 7.
fn dispatched() -> Spoke {
    let s = changed(go(
        &Spoke::planned(repo()),
        SpokeEvent::DispatchStarted,
        1000,
    ));
    changed(go(&s, accepted(7), 1100))
}

fn running() -> Spoke {
    changed(go(&dispatched(), rep(1, ReportOutcome::Running), 2000))
}

#[test]
fn status_strings_round_trip() {
    for st in SpokeStatus::ALL {
        assert_eq!(st.as_str().parse::<SpokeStatus>(), Ok(st));
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(json, format!("\"{}\"", st.as_str()));
    }
    assert!("Running".parse::<SpokeStatus>().is_err());
    let terminal: Vec<_> = SpokeStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect();
    use SpokeStatus as S;
    assert_eq!(
        terminal,
        [
            S::Skipped,
            S::Succeeded,
            S::Failed,
            S::Cancelled,
            S::TimedOut,
            S::DispatchFailed
        ]
    );
}

#[test]
fn channels_round_trip_and_due_is_checked() {
    for c in [Channel::Callback, Channel::WorkflowRun, Channel::Reconcile] {
        assert_eq!(c.as_str().parse::<Channel>(), Ok(c));
        assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
    }
    assert!("webhook".parse::<Channel>().is_err());
    let s = dispatched();
    assert!(!s.is_due(1000 + QUEUED - 1));
    assert!(s.is_due(1000 + QUEUED));
    assert!(!Spoke::planned(repo()).is_due(i64::MAX));
}

#[test]
fn conclusions_map_to_outcomes() {
    for c in ["success", "neutral", "skipped", "SUCCESS"] {
        assert_eq!(
            ReportOutcome::from_conclusion(c),
            ReportOutcome::Succeeded,
            "{c}"
        );
    }
    assert_eq!(
        ReportOutcome::from_conclusion("cancelled"),
        ReportOutcome::Cancelled
    );
    assert_eq!(
        ReportOutcome::from_conclusion("failure"),
        ReportOutcome::Failed { detail: None }
    );
    for c in [
        "timed_out",
        "stale",
        "action_required",
        "startup_failure",
        "weird",
    ] {
        assert_eq!(
            ReportOutcome::from_conclusion(c),
            ReportOutcome::Failed {
                detail: Some(c.into())
            }
        );
    }
}

#[test]
fn happy_path_sets_times_and_due() {
    let s = changed(go(
        &Spoke::planned(repo()),
        SpokeEvent::DispatchStarted,
        1000,
    ));
    assert_eq!((s.status, s.attempt), (SpokeStatus::Dispatching, 1));
    assert_eq!(s.dispatched_at, Some(1000));
    let s = changed(go(&s, accepted(7), 1100));
    assert_eq!(s.status, SpokeStatus::Dispatched);
    assert_eq!(s.workflow_run_id, Some(7));
    assert_eq!(s.due_at, Some(1000 + QUEUED));
    let s = changed(go(&s, rep(1, ReportOutcome::Running), 2000));
    assert_eq!((s.status, s.started_at), (SpokeStatus::Running, Some(2000)));
    assert_eq!(s.due_at, Some(2000 + RUNNING));
    let s = changed(go(&s, rep(1, ReportOutcome::Succeeded), 5000));
    assert_eq!(s.status, SpokeStatus::Succeeded);
    assert_eq!((s.finished_at, s.due_at), (Some(5000), None));
    assert_eq!(s.duration_ms(), Some(4000));
}

#[test]
fn report_can_beat_the_dispatch_response() {
    let s = changed(go(
        &Spoke::planned(repo()),
        SpokeEvent::DispatchStarted,
        1000,
    ));
    let s = changed(go(&s, rep_run(1, 7, ReportOutcome::Running), 1050));
    assert_eq!(s.status, SpokeStatus::Running);
    assert_eq!(s.workflow_run_id, Some(7));
    // The late dispatch answer never moves the status back.
    assert_eq!(go(&s, accepted(7), 1100), Transition::Unchanged);
    let done = changed(go(&s, rep(1, ReportOutcome::Succeeded), 1200));
    assert_eq!(done.status, SpokeStatus::Succeeded);
    assert_eq!(go(&done, accepted(7), 1300), Transition::Unchanged);
}

#[test]
fn late_dispatch_answer_fills_missing_run_id_only() {
    let s = changed(go(
        &Spoke::planned(repo()),
        SpokeEvent::DispatchStarted,
        1000,
    ));
    let s = changed(go(&s, rep(1, ReportOutcome::Succeeded), 1050));
    assert_eq!(s.workflow_run_id, None);
    let filled = changed(go(&s, accepted(9), 1100));
    assert_eq!(filled.status, SpokeStatus::Succeeded);
    assert_eq!(filled.workflow_run_id, Some(9));
    assert!(filled.run_url.is_some());
    // A different run id for the same attempt is a conflict.
    match go(&filled, accepted(10), 1200) {
        Transition::Conflict { spoke, .. } => {
            assert_eq!(spoke.conflicts, 1);
            assert_eq!(spoke.status, SpokeStatus::Succeeded);
            assert_eq!(spoke.workflow_run_id, Some(9));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn first_final_report_decides() {
    let s = changed(go(&running(), rep(1, ReportOutcome::Cancelled), 3000));
    assert_eq!(s.status, SpokeStatus::Cancelled);
    assert_eq!(
        go(&s, rep(1, ReportOutcome::Cancelled), 3100),
        Transition::Unchanged
    );
    assert_eq!(
        go(&s, rep(1, ReportOutcome::Running), 3100),
        Transition::Unchanged
    );
    match go(&s, rep(1, ReportOutcome::Succeeded), 3200) {
        Transition::Conflict { spoke, detail } => {
            assert_eq!(spoke.status, SpokeStatus::Cancelled);
            assert_eq!(spoke.conflicts, 1);
            assert!(detail.contains("cancelled"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn agreeing_report_from_another_channel_is_unchanged() {
    let s = changed(go(
        &running(),
        rep_run(1, 7, ReportOutcome::Succeeded),
        3000,
    ));
    assert_eq!(
        go(&s, rep(1, ReportOutcome::Succeeded), 3100),
        Transition::Unchanged
    );
    assert_eq!(
        go(&s, rep_run(1, 7, ReportOutcome::Succeeded), 3100),
        Transition::Unchanged
    );
}

#[test]
fn report_from_a_second_run_is_a_conflict() {
    let s = running();
    match go(&s, rep_run(1, 8, ReportOutcome::Succeeded), 3000) {
        Transition::Conflict { spoke, detail } => {
            assert_eq!(spoke.status, SpokeStatus::Running);
            assert_eq!(spoke.conflicts, 1);
            assert!(detail.contains("exactly one run"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn attempts_older_are_stale_and_newer_invalid() {
    let s = running();
    let mut later = s.clone();
    later.attempt = 2;
    assert!(matches!(
        go(&later, rep(1, ReportOutcome::Succeeded), 3000),
        Transition::Stale { .. }
    ));
    assert!(matches!(
        go(&s, rep(2, ReportOutcome::Succeeded), 3000),
        Transition::Invalid { .. }
    ));
    assert!(matches!(
        go(
            &Spoke::planned(repo()),
            rep(0, ReportOutcome::Succeeded),
            3000
        ),
        Transition::Invalid { .. }
    ));
}

#[test]
fn failure_retries_with_backoff_until_the_limit() {
    // Default: limit 2, backoff 30s, factor 2.
    let s = changed(go(&running(), rep(1, failed("exit 1")), 10_000));
    assert_eq!(s.status, SpokeStatus::RetryWait);
    assert_eq!(s.due_at, Some(10_000 + 30_000));
    assert_eq!(s.reason.as_deref(), Some("failed: exit 1"));
    // Late reports for the decided attempt change nothing.
    assert_eq!(
        go(&s, rep(1, failed("exit 1")), 10_100),
        Transition::Unchanged
    );
    assert!(matches!(
        go(&s, rep(1, ReportOutcome::Succeeded), 10_100),
        Transition::Stale { .. }
    ));
    let s = changed(go(&s, SpokeEvent::DispatchStarted, 40_000));
    assert_eq!((s.status, s.attempt), (SpokeStatus::Dispatching, 2));
    assert_eq!((s.workflow_run_id, s.finished_at), (None, None));
    let s = changed(go(&s, rep(2, failed("again")), 50_000));
    assert_eq!(s.status, SpokeStatus::RetryWait);
    assert_eq!(s.due_at, Some(50_000 + 60_000));
    let s = changed(go(&s, SpokeEvent::DispatchStarted, 110_000));
    let s = changed(go(
        &s,
        rep(3, ReportOutcome::Failed { detail: None }),
        120_000,
    ));
    assert_eq!(s.status, SpokeStatus::Failed);
    assert_eq!((s.due_at, s.reason.as_deref()), (None, Some("failed")));
    assert_eq!(s.attempt, 3);
}

#[test]
fn retry_limit_zero_fails_at_once_and_cancel_never_retries() {
    let policy = Policy {
        retry: crate::hub::policy::RetryPolicy {
            limit: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let ctx = TransitionContext {
        now: 5000,
        policy: &policy,
    };
    let s = changed(apply(&running(), rep(1, failed("x")), &ctx));
    assert_eq!(s.status, SpokeStatus::Failed);
    let s = changed(apply(&running(), SpokeEvent::TimedOut, &ctx));
    assert_eq!(s.status, SpokeStatus::TimedOut);
    let s = changed(go(&running(), rep(1, ReportOutcome::Cancelled), 5000));
    assert_eq!(s.status, SpokeStatus::Cancelled);
}

#[test]
fn timeout_consumes_an_attempt() {
    let s = changed(go(&dispatched(), SpokeEvent::TimedOut, 1000 + QUEUED));
    assert_eq!(s.status, SpokeStatus::RetryWait);
    assert_eq!(s.due_at, Some(1000 + QUEUED + 30_000));
    assert_eq!(s.reason.as_deref(), Some("timed out (queued)"));
    // A late report for the timed-out attempt is stale, never a change.
    assert!(matches!(
        go(&s, rep(1, failed("x")), 1000 + QUEUED + 5),
        Transition::Stale { .. }
    ));
    let mut last = running();
    last.attempt = 3;
    let t = changed(go(&last, SpokeEvent::TimedOut, 9_000_000));
    assert_eq!((t.status, t.due_at), (SpokeStatus::TimedOut, None));
    assert_eq!(t.reason.as_deref(), Some("timed out (running)"));
    assert!(matches!(
        go(&t, rep(3, ReportOutcome::Succeeded), 9_000_001),
        Transition::Stale { .. }
    ));
    for st in [
        SpokeStatus::Planned,
        SpokeStatus::RetryWait,
        SpokeStatus::Succeeded,
    ] {
        let mut x = running();
        x.status = st;
        assert!(matches!(
            go(&x, SpokeEvent::TimedOut, 1),
            Transition::Invalid { .. }
        ));
    }
}

#[test]
fn lost_dispatch_goes_unknown_then_is_found_or_redispatched() {
    let s = changed(go(
        &Spoke::planned(repo()),
        SpokeEvent::DispatchStarted,
        1000,
    ));
    let u = changed(go(&s, SpokeEvent::DispatchLost, 1500));
    assert_eq!(u.status, SpokeStatus::Unknown);
    assert_eq!(u.due_at, Some(1500 + 10_000));
    // Found by search.
    let found = changed(go(&u, accepted(42), 12_000));
    assert_eq!(
        (found.status, found.workflow_run_id),
        (SpokeStatus::Dispatched, Some(42))
    );
    assert_eq!(found.attempt, 1);
    // Not found: re-dispatch with the same attempt.
    let again = changed(go(&u, SpokeEvent::DispatchStarted, 12_000));
    assert_eq!((again.status, again.attempt), (SpokeStatus::Dispatching, 1));
    // A report for the attempt is valid while unknown.
    let r = changed(go(&u, rep(1, ReportOutcome::Running), 11_000));
    assert_eq!(r.status, SpokeStatus::Running);
}

#[test]
fn dispatch_failures_end_the_spoke() {
    let s = changed(go(
        &Spoke::planned(repo()),
        SpokeEvent::DispatchStarted,
        1000,
    ));
    let m = changed(go(&s, SpokeEvent::WorkflowMissing, 1100));
    assert_eq!(m.status, SpokeStatus::Skipped);
    assert_eq!(m.reason.as_deref(), Some("no spoke workflow"));
    let r = changed(go(
        &s,
        SpokeEvent::DispatchRejected {
            message: "422 Unexpected inputs".into(),
        },
        1100,
    ));
    assert_eq!(r.status, SpokeStatus::DispatchFailed);
    assert_eq!(r.reason.as_deref(), Some("422 Unexpected inputs"));
    assert_eq!(r.due_at, None);
    assert!(matches!(
        go(&r, accepted(1), 1200),
        Transition::Invalid { .. }
    ));
}

#[test]
fn cancel_and_run_timeout_end_any_non_terminal_spoke() {
    let s = changed(go(&running(), SpokeEvent::Cancel, 3000));
    assert_eq!((s.status, s.due_at), (SpokeStatus::Cancelled, None));
    assert_eq!(go(&s, SpokeEvent::Cancel, 3001), Transition::Unchanged);
    let p = changed(go(&Spoke::planned(repo()), SpokeEvent::Cancel, 3000));
    assert_eq!(p.status, SpokeStatus::Cancelled);
    let w = changed(go(&running(), rep(1, failed("x")), 3000));
    let t = changed(go(&w, SpokeEvent::RunTimedOut, 4000));
    assert_eq!((t.status, t.due_at), (SpokeStatus::TimedOut, None));
    let done = changed(go(&running(), rep(1, ReportOutcome::Succeeded), 3000));
    assert!(matches!(
        go(&done, SpokeEvent::Cancel, 1),
        Transition::Invalid { .. }
    ));
    assert!(matches!(
        go(&done, SpokeEvent::RunTimedOut, 1),
        Transition::Invalid { .. }
    ));
}

#[test]
fn rerun_ignores_the_retry_limit() {
    let mut f = running();
    f.attempt = 3;
    let f = changed(go(&f, rep(3, failed("x")), 5000));
    assert_eq!(f.status, SpokeStatus::Failed);
    let w = changed(go(&f, SpokeEvent::Rerun, 6000));
    assert_eq!((w.status, w.due_at), (SpokeStatus::RetryWait, Some(6000)));
    let d = changed(go(&w, SpokeEvent::DispatchStarted, 6000));
    assert_eq!(d.attempt, 4);
    let done = changed(go(&running(), rep(1, ReportOutcome::Succeeded), 3000));
    assert!(matches!(
        go(&done, SpokeEvent::Rerun, 1),
        Transition::Invalid { .. }
    ));
}

/// Every event in every state: never panics, and terminal statuses never move except by Rerun
/// or by filling a missing run id.
#[test]
fn every_event_in_every_state_is_total() {
    let events = || {
        vec![
            SpokeEvent::DispatchStarted,
            accepted(7),
            SpokeEvent::WorkflowMissing,
            SpokeEvent::DispatchRejected {
                message: "m".into(),
            },
            SpokeEvent::DispatchLost,
            rep(1, ReportOutcome::Running),
            rep(1, ReportOutcome::Succeeded),
            rep(1, failed("d")),
            rep(1, ReportOutcome::Cancelled),
            rep_run(1, 99, ReportOutcome::Succeeded),
            rep(0, ReportOutcome::Succeeded),
            rep(u32::MAX, ReportOutcome::Succeeded),
            SpokeEvent::TimedOut,
            SpokeEvent::RunTimedOut,
            SpokeEvent::Cancel,
            SpokeEvent::Rerun,
        ]
    };
    for st in SpokeStatus::ALL {
        for ev in events() {
            let mut s = running();
            s.status = st;
            s.attempt = u32::MAX;
            let _ = go(&s, ev.clone(), i64::MAX);
            let mut s = running();
            s.status = st;
            let is_rerun = ev == SpokeEvent::Rerun;
            if let Transition::Changed(n) = go(&s, ev, 10_000) {
                if st.is_terminal() && !is_rerun {
                    assert_eq!(n.status, st, "{st:?} moved");
                }
            }
        }
    }
}

/// A second dispatch is never allowed while one may be out, and the dispatch answers only make
/// sense while dispatching.
#[test]
fn dispatch_events_only_in_their_states() {
    use SpokeStatus as S;
    for st in SpokeStatus::ALL {
        let mut s = running();
        s.status = st;
        let started = go(&s, SpokeEvent::DispatchStarted, 9000);
        let allowed = matches!(st, S::Planned | S::RetryWait | S::Unknown);
        assert_eq!(matches!(started, Transition::Changed(_)), allowed, "{st}");
        for ev in [
            SpokeEvent::WorkflowMissing,
            SpokeEvent::DispatchRejected {
                message: "m".into(),
            },
            SpokeEvent::DispatchLost,
        ] {
            let t = go(&s, ev.clone(), 9000);
            assert_eq!(
                matches!(t, Transition::Changed(_)),
                st == S::Dispatching,
                "{ev:?} in {st}"
            );
        }
    }
}

// Pulled work (pull and hybrid models).

fn lease(id: &str, until: i64) -> Lease {
    Lease {
        id: id.into(),
        worker: format!("worker-of-{id}"),
        until,
    }
}

fn queued(now: i64) -> Spoke {
    changed(go(&Spoke::planned(repo()), SpokeEvent::Enqueue, now))
}

#[test]
fn enqueue_starts_an_attempt_that_waits_for_a_worker() {
    let s = queued(1_000);
    assert_eq!(s.status, SpokeStatus::Dispatched);
    assert_eq!(s.attempt, 1);
    assert_eq!(s.dispatched_at, Some(1_000));
    assert_eq!(s.due_at, Some(1_000 + QUEUED), "the queued timeout applies");
    assert!(s.lease.is_none());
    // Only planned and waiting spokes are queued.
    assert!(matches!(
        go(&s, SpokeEvent::Enqueue, 2_000),
        Transition::Invalid { .. }
    ));
}

#[test]
fn a_queued_attempt_is_claimed_once_and_the_lease_bounds_its_due_time() {
    let s = queued(1_000);
    let running = changed(go(
        &s,
        SpokeEvent::Claim {
            lease: lease("a", 31_000),
        },
        2_000,
    ));
    assert_eq!(running.status, SpokeStatus::Running);
    assert_eq!(running.started_at, Some(2_000));
    assert_eq!(
        running.due_at,
        Some(31_000),
        "the lease ends before the running timeout"
    );
    // A second claim of the same attempt is refused; a retried claim of the same lease is a no-op.
    assert!(matches!(
        go(
            &running,
            SpokeEvent::Claim {
                lease: lease("b", 40_000)
            },
            2_500
        ),
        Transition::Invalid { .. }
    ));
    assert_eq!(
        go(
            &running,
            SpokeEvent::Claim {
                lease: lease("a", 31_000)
            },
            2_500
        ),
        Transition::Unchanged
    );
}

#[test]
fn heartbeats_extend_only_a_live_lease_of_its_holder() {
    let s = changed(go(
        &queued(0),
        SpokeEvent::Claim {
            lease: lease("a", 30_000),
        },
        0,
    ));
    let hb = |id: &str, until, now| {
        go(
            &s,
            SpokeEvent::Heartbeat {
                lease_id: id.into(),
                until,
            },
            now,
        )
    };
    let extended = changed(hb("a", 60_000, 20_000));
    assert_eq!(extended.lease.as_ref().unwrap().until, 60_000);
    assert_eq!(extended.due_at, Some(60_000));
    assert_eq!(
        hb("a", 10_000, 5_000),
        Transition::Unchanged,
        "never shortened"
    );
    assert!(
        matches!(hb("b", 60_000, 20_000), Transition::Invalid { .. }),
        "not its lease"
    );
    assert!(
        matches!(hb("a", 60_000, 30_000), Transition::Invalid { .. }),
        "a lease that ran out cannot be revived"
    );
}

#[test]
fn the_lease_holder_completes_and_a_lost_lease_s_result_is_stale() {
    let s = changed(go(
        &queued(0),
        SpokeEvent::Claim {
            lease: lease("a", 30_000),
        },
        0,
    ));
    let complete = |id: &str, outcome, now| {
        go(
            &s,
            SpokeEvent::Complete {
                lease_id: id.into(),
                outcome,
                summary: Some("done".into()),
            },
            now,
        )
    };
    let ok = changed(complete("a", ReportOutcome::Succeeded, 10_000));
    assert_eq!(ok.status, SpokeStatus::Succeeded);
    assert_eq!(ok.summary.as_deref(), Some("done"));
    assert!(ok.lease.is_none() && ok.due_at.is_none());
    let failed = changed(complete(
        "a",
        ReportOutcome::Failed { detail: None },
        10_000,
    ));
    assert_eq!(
        failed.status,
        SpokeStatus::RetryWait,
        "failures retry by policy"
    );
    assert!(failed.lease.is_none());
    assert!(matches!(
        complete("b", ReportOutcome::Succeeded, 10_000),
        Transition::Stale { .. }
    ));
    assert!(matches!(
        complete("a", ReportOutcome::Succeeded, 30_000),
        Transition::Stale { .. }
    ));
    assert!(matches!(
        complete("a", ReportOutcome::Running, 10_000),
        Transition::Invalid { .. }
    ));
    // After the spoke was cancelled, the holder's result changes nothing.
    let cancelled = changed(go(&s, SpokeEvent::Cancel, 5_000));
    assert!(cancelled.lease.is_none());
    let late = go(
        &cancelled,
        SpokeEvent::Complete {
            lease_id: "a".into(),
            outcome: ReportOutcome::Succeeded,
            summary: None,
        },
        6_000,
    );
    assert!(matches!(late, Transition::Stale { .. }));
}

#[test]
fn a_lease_that_runs_out_ends_the_attempt_and_the_next_is_a_new_one() {
    let s = changed(go(
        &queued(0),
        SpokeEvent::Claim {
            lease: lease("a", 30_000),
        },
        0,
    ));
    let expire = |s: &Spoke, now| {
        go(
            s,
            SpokeEvent::LeaseExpired {
                lease_id: "a".into(),
            },
            now,
        )
    };
    assert!(
        matches!(expire(&s, 29_999), Transition::Invalid { .. }),
        "still running"
    );
    let ended = changed(expire(&s, 30_000));
    assert_eq!(ended.status, SpokeStatus::RetryWait);
    assert_eq!(ended.retry_after, Some(SpokeStatus::Failed));
    assert!(ended.reason.as_deref().unwrap().contains("lease ran out"));
    assert!(ended.lease.is_none());
    assert_eq!(expire(&ended, 31_000), Transition::Unchanged, "idempotent");
    // The retry is a new attempt that another worker claims; the old holder's result is stale.
    let again = changed(go(&ended, SpokeEvent::Enqueue, 40_000));
    assert_eq!(again.attempt, 2);
    let b = changed(go(
        &again,
        SpokeEvent::Claim {
            lease: lease("b", 70_000),
        },
        41_000,
    ));
    let late = go(
        &b,
        SpokeEvent::Complete {
            lease_id: "a".into(),
            outcome: ReportOutcome::Succeeded,
            summary: None,
        },
        42_000,
    );
    assert!(matches!(late, Transition::Stale { .. }));
    // Out of retries, a lost lease fails the spoke.
    let mut last = b.clone();
    last.attempt = 3;
    let failed = changed(go(
        &last,
        SpokeEvent::LeaseExpired {
            lease_id: "b".into(),
        },
        70_000,
    ));
    assert_eq!(failed.status, SpokeStatus::Failed);
}

#[test]
fn the_running_timeout_still_applies_under_a_long_lease() {
    let s = changed(go(
        &queued(0),
        SpokeEvent::Claim {
            lease: lease("a", RUNNING * 2),
        },
        0,
    ));
    assert_eq!(s.due_at, Some(RUNNING));
    let t = changed(go(&s, SpokeEvent::TimedOut, RUNNING));
    assert!(t.lease.is_none(), "a timeout ends the lease");
}

#[test]
fn a_heartbeat_is_a_renewal_and_nothing_else_is() {
    let s = changed(go(
        &queued(0),
        SpokeEvent::Claim {
            lease: lease("a", 30_000),
        },
        0,
    ));
    let renewed = changed(go(
        &s,
        SpokeEvent::Heartbeat {
            lease_id: "a".into(),
            until: 60_000,
        },
        10_000,
    ));
    assert!(is_renewal(&s, &renewed));
    assert!(!is_renewal(&queued(0), &s), "a claim is news");
    let done = changed(go(
        &s,
        SpokeEvent::Complete {
            lease_id: "a".into(),
            outcome: ReportOutcome::Succeeded,
            summary: None,
        },
        10_000,
    ));
    assert!(!is_renewal(&s, &done), "a completion is news");
    let mut other = renewed.clone();
    other.lease.as_mut().unwrap().id = "b".into();
    assert!(!is_renewal(&s, &other), "another lease is news");
}

#[test]
fn a_due_pulled_spoke_ends_by_its_lease_or_its_timeouts() {
    let waiting = queued(0);
    assert_eq!(pulled_due_event(&waiting, QUEUED - 1), None, "not due yet");
    assert_eq!(
        pulled_due_event(&waiting, QUEUED),
        Some(SpokeEvent::TimedOut),
        "waited too long in the queue"
    );
    let running = changed(go(
        &waiting,
        SpokeEvent::Claim {
            lease: lease("a", 30_000),
        },
        1_000,
    ));
    assert_eq!(pulled_due_event(&running, 29_999), None);
    assert_eq!(
        pulled_due_event(&running, 30_000),
        Some(SpokeEvent::LeaseExpired {
            lease_id: "a".into()
        }),
        "the worker stopped heartbeating"
    );
    // Heartbeated past the running timeout: the timeout ends it.
    let mut long = running.clone();
    long.lease.as_mut().unwrap().until = i64::MAX;
    long.due_at = scheduled_due(&long, &Policy::default());
    let due = long.due_at.unwrap();
    assert_eq!(pulled_due_event(&long, due), Some(SpokeEvent::TimedOut));
    assert_eq!(pulled_due_event(&Spoke::planned(repo()), i64::MAX), None);
}

#[test]
fn a_callback_token_is_good_only_while_its_attempt_is_open() {
    use SpokeStatus as S;
    let mut done = Spoke::planned(repo());
    done.attempt = 1;
    done.status = S::Succeeded;
    let failed = ReportOutcome::Failed { detail: None };
    // A replay of the attempt's token with another outcome after it ended: refused, so it
    // cannot raise the spoke's conflict count.
    assert!(callback_closed(&done, 1, &failed).is_some());
    assert!(callback_closed(&done, 1, &ReportOutcome::Cancelled).is_some());
    // An agreeing late callback is admitted (it may carry the summary).
    assert_eq!(callback_closed(&done, 1, &ReportOutcome::Succeeded), None);
    // An older attempt's token is closed whatever it says.
    let mut second = done.clone();
    second.attempt = 2;
    second.status = S::Running;
    assert!(callback_closed(&second, 1, &ReportOutcome::Succeeded).is_some());
    // The open attempt's own token is good.
    assert_eq!(callback_closed(&second, 2, &failed), None);
    // Failed and waiting for a retry: another failure agrees, a success does not.
    let mut waiting = done.clone();
    waiting.status = S::RetryWait;
    waiting.retry_after = Some(S::Failed);
    assert_eq!(callback_closed(&waiting, 1, &failed), None);
    assert!(callback_closed(&waiting, 1, &ReportOutcome::Succeeded).is_some());
}
