use super::*;

fn overrides(toml_text: &str) -> PolicyOverrides {
    toml::from_str(toml_text).unwrap()
}

#[test]
fn parses_durations() {
    for (s, ms) in [
        ("500ms", 500),
        ("30s", 30_000),
        ("15m", 900_000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        (" 2d ", 172_800_000),
        ("1m30s250ms", 90_250),
        ("0s", 0),
    ] {
        assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
    }
}

#[test]
fn rejects_bad_durations_with_clear_errors() {
    assert_eq!(parse_duration(""), Err(DurationError::Empty));
    for (s, why) in [
        ("30", "missing unit"),
        ("s", "expected a number"),
        ("10x", "unknown unit"),
        (
            "1.5h",
            "fractions are not supported (write 1h30m, not 1.5h)",
        ),
        ("-5s", "expected a number"),
        ("1 h", "missing unit"),
    ] {
        match parse_duration(s) {
            Err(DurationError::Invalid(_, w)) => assert_eq!(w, why, "{s}"),
            other => panic!("{s}: {other:?}"),
        }
    }
    assert!(matches!(
        parse_duration("99999999999999999999d"),
        Err(DurationError::TooLarge(_))
    ));
    assert!(matches!(
        parse_duration("999999999999999d"),
        Err(DurationError::TooLarge(_))
    ));
}

#[test]
fn formats_durations() {
    assert_eq!(format_duration(Duration::from_secs(65)), "1m 05s");
    assert_eq!(format_duration(Duration::from_secs(45)), "45s");
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
    assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
}

#[test]
fn defaults_match_the_spec() {
    let p = Policy::default();
    assert_eq!((p.concurrency, p.api_concurrency), (usize::MAX, 20));
    assert_eq!(p.success_threshold, SuccessThreshold::All);
    assert_eq!(p.retry.limit, 2);
    assert_eq!(p.retry.backoff, Duration::from_secs(30));
    assert_eq!(p.retry.cap, Duration::from_secs(600));
    assert_eq!(p.timeouts.queued, Duration::from_secs(900));
    assert_eq!(p.timeouts.running, Duration::from_secs(3600));
    assert_eq!(p.timeouts.overall, Duration::from_secs(6 * 3600));
    assert!(!p.cancel_on_timeout && !p.allow_parallel);
    assert_eq!(p.unknown_search_delay, Duration::from_secs(10));
    assert_eq!(p.with(&PolicyOverrides::default()), Ok(p));
}

#[test]
fn backoff_grows_by_factor_and_is_capped() {
    let r = RetryPolicy::default();
    assert_eq!(r.backoff(1), Duration::from_secs(30));
    assert_eq!(r.backoff(2), Duration::from_secs(60));
    assert_eq!(r.backoff(3), Duration::from_secs(120));
    assert_eq!(r.backoff(6), Duration::from_secs(600));
    assert_eq!(r.backoff(u32::MAX), Duration::from_secs(600));
    assert!(r.allows_retry_after(2) && !r.allows_retry_after(3));
}

#[test]
fn applies_overrides_from_toml() {
    let o = overrides(
        r#"
        concurrency = 5
        success_threshold = "90%"
        queued_timeout = "5m"
        running_timeout = "1h30m"
        overall_timeout = "2h"
        cancel_on_timeout = true
        allow_parallel = true
        unknown_search_delay = "2s"
        [retry]
        limit = 0
        backoff = "1s"
        factor = 3.0
        cap = "1m"
        "#,
    );
    let p = Policy::default().with(&o).unwrap();
    assert_eq!(p.concurrency, 5);
    assert_eq!(p.success_threshold, SuccessThreshold::Ratio(0.9));
    assert_eq!(p.timeouts.queued, Duration::from_secs(300));
    assert_eq!(p.timeouts.running, Duration::from_secs(5400));
    assert_eq!(p.timeouts.overall, Duration::from_secs(7200));
    assert!(p.cancel_on_timeout && p.allow_parallel);
    assert_eq!(p.unknown_search_delay, Duration::from_secs(2));
    assert_eq!(p.retry.limit, 0);
    assert_eq!(p.retry.backoff(3), Duration::from_secs(9));
    assert_eq!(p.retry.cap, Duration::from_secs(60));
    // A second layer overrides only what it names.
    let task = overrides("concurrency = 2");
    let q = p.with(&task).unwrap();
    assert_eq!(q.concurrency, 2);
    assert_eq!(q.timeouts.queued, Duration::from_secs(300));
}

#[test]
fn thresholds_parse_from_text_and_numbers() {
    for (t, want) in [
        ("success_threshold = \"all\"", SuccessThreshold::All),
        ("success_threshold = \"ANY\"", SuccessThreshold::Any),
        ("success_threshold = \"100%\"", SuccessThreshold::Ratio(1.0)),
        ("success_threshold = 0.75", SuccessThreshold::Ratio(0.75)),
        ("success_threshold = 1", SuccessThreshold::Ratio(1.0)),
    ] {
        let p = Policy::default().with(&overrides(t)).unwrap();
        assert_eq!(p.success_threshold, want, "{t}");
    }
    for (r, shown) in [
        (0.9, "90%"),
        (0.995, "99.5%"),
        (1.0, "100%"),
        (0.333, "33.3%"),
    ] {
        let t = SuccessThreshold::Ratio(r);
        assert_eq!(t.to_string(), shown);
        assert_eq!(SuccessThreshold::parse(shown), Ok(t));
    }
    assert_eq!(SuccessThreshold::All.to_string(), "all");
    assert_eq!(SuccessThreshold::Any.to_string(), "any");
    for t in [
        "success_threshold = \"most\"",
        "success_threshold = \"0%\"",
        "success_threshold = \"150%\"",
        "success_threshold = 1.5",
        "success_threshold = 0",
        "success_threshold = \"x%\"",
    ] {
        let e = Policy::default().with(&overrides(t)).unwrap_err();
        assert_eq!(e.field, "success_threshold", "{t}");
    }
}

#[test]
fn validation_errors_name_the_field() {
    for (t, field) in [
        ("concurrency = 0", "concurrency"),
        ("api_concurrency = 0", "api_concurrency"),
        ("queued_timeout = \"soon\"", "queued_timeout"),
        ("running_timeout = \"0s\"", "running_timeout"),
        ("overall_timeout = \"\"", "overall_timeout"),
        ("unknown_search_delay = \"5\"", "unknown_search_delay"),
        ("[retry]\nfactor = 0.5", "retry.factor"),
        ("[retry]\nfactor = nan", "retry.factor"),
        ("[retry]\nbackoff = \"1x\"", "retry.backoff"),
        ("[retry]\ncap = \"1s\"", "retry.cap"),
        ("reconcile_after = \"0s\"", "reconcile_after"),
        ("reconcile_after = \"1.5m\"", "reconcile_after"),
        ("reconcile_rate = 0", "reconcile_rate"),
    ] {
        let e = Policy::default().with(&overrides(t)).unwrap_err();
        assert_eq!(e.field, field, "{t}");
        assert!(
            e.to_string().starts_with(&format!("policy.{field}: ")),
            "{e}"
        );
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let e = toml::from_str::<PolicyOverrides>("concurency = 3").unwrap_err();
    assert!(e.to_string().contains("concurency"), "{e}");
    assert!(toml::from_str::<PolicyOverrides>("[retry]\nlimt = 3").is_err());
}

#[test]
fn reconciliation_defaults_and_overrides() {
    let d = Policy::default();
    assert_eq!(d.reconcile_after, Duration::from_secs(60));
    assert_eq!(d.reconcile_rate, 10);
    let p = d
        .with(&overrides(
            "reconcile_after = \"750ms\"\nreconcile_rate = 3",
        ))
        .unwrap();
    assert_eq!(p.reconcile_after, Duration::from_millis(750));
    assert_eq!(p.reconcile_rate, 3);
}
