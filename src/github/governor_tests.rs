use futures::FutureExt;

use super::*;

const EPOCH: u64 = 1_800_000_000;

fn gov() -> Governor {
    Governor::new(GovernorConfig {
        max_in_flight: 2,
        min_backoff: Duration::from_secs(60),
        max_pause: Duration::from_secs(3600),
    })
}

fn limited(status: u16) -> RateInfo {
    RateInfo {
        status,
        ..RateInfo::default()
    }
}

#[test]
fn retry_after_sets_the_pause() {
    let g = gov();
    let t0 = Instant::now();
    let info = RateInfo {
        retry_after: Some(Duration::from_secs(7)),
        remaining: Some(0),
        reset_epoch: Some(EPOCH + 500),
        ..limited(403)
    };
    assert_eq!(
        g.observe(&info, t0, EPOCH),
        Verdict::Limited {
            pause: Duration::from_secs(7)
        }
    );
    assert_eq!(g.pause_remaining(t0), Some(Duration::from_secs(7)));
    assert_eq!(
        g.pause_remaining(t0 + Duration::from_secs(5)),
        Some(Duration::from_secs(2))
    );
    assert_eq!(g.pause_remaining(t0 + Duration::from_secs(7)), None);
}

#[test]
fn remaining_zero_pauses_until_reset() {
    let g = gov();
    let t0 = Instant::now();
    let info = RateInfo {
        remaining: Some(0),
        reset_epoch: Some(EPOCH + 120),
        ..limited(403)
    };
    assert!(info.is_rate_limited());
    assert_eq!(
        g.observe(&info, t0, EPOCH),
        Verdict::Limited {
            pause: Duration::from_secs(120)
        }
    );
    assert_eq!(g.pause_remaining(t0), Some(Duration::from_secs(120)));
}

#[test]
fn spent_quota_on_success_pauses_until_reset_without_rejecting() {
    let g = gov();
    let t0 = Instant::now();
    let info = RateInfo {
        remaining: Some(0),
        reset_epoch: Some(EPOCH + 30),
        ..limited(200)
    };
    assert_eq!(g.observe(&info, t0, EPOCH), Verdict::Pass);
    assert_eq!(g.pause_remaining(t0), Some(Duration::from_secs(30)));
}

#[test]
fn secondary_limit_backs_off_exponentially_and_resets_on_success() {
    let g = gov();
    let t0 = Instant::now();
    let secondary = RateInfo {
        remaining: Some(4000),
        message_says_rate_limit: true,
        ..limited(403)
    };
    let pauses: Vec<_> = (0..3)
        .map(|_| match g.observe(&secondary, t0, EPOCH) {
            Verdict::Limited { pause } => pause.as_secs(),
            Verdict::Pass => panic!("not limited"),
        })
        .collect();
    assert_eq!(pauses, [60, 120, 240]);
    assert_eq!(g.observe(&limited(200), t0, EPOCH), Verdict::Pass);
    assert_eq!(
        g.observe(&secondary, t0, EPOCH),
        Verdict::Limited {
            pause: Duration::from_secs(60)
        }
    );
}

#[test]
fn plain_forbidden_is_not_a_rate_limit() {
    let g = gov();
    let t0 = Instant::now();
    let forbidden = RateInfo {
        remaining: Some(10),
        ..limited(403)
    };
    assert_eq!(g.observe(&forbidden, t0, EPOCH), Verdict::Pass);
    assert_eq!(g.pause_remaining(t0), None);
    assert!(limited(429).is_rate_limited());
}

#[test]
fn rate_info_reads_headers_and_message() {
    let mut h = HeaderMap::new();
    h.insert("retry-after", "3".parse().unwrap());
    h.insert("x-ratelimit-remaining", "0".parse().unwrap());
    h.insert("x-ratelimit-reset", "1800000100".parse().unwrap());
    let body = r#"{"message":"You have exceeded a secondary rate limit."}"#;
    let info = RateInfo::from_response(StatusCode::FORBIDDEN, &h, body);
    assert_eq!(info.retry_after, Some(Duration::from_secs(3)));
    assert_eq!(info.remaining, Some(0));
    assert_eq!(info.reset_epoch, Some(1_800_000_100));
    assert!(info.message_says_rate_limit);
    let ok = RateInfo::from_response(StatusCode::OK, &HeaderMap::new(), "rate limit");
    assert!(!ok.message_says_rate_limit && !ok.is_rate_limited());
}

#[test]
fn pauses_never_shrink() {
    let g = gov();
    let t0 = Instant::now();
    let long = RateInfo {
        retry_after: Some(Duration::from_secs(100)),
        ..limited(429)
    };
    let short = RateInfo {
        retry_after: Some(Duration::from_secs(1)),
        ..limited(429)
    };
    g.observe(&long, t0, EPOCH);
    g.observe(&short, t0, EPOCH);
    assert_eq!(g.pause_remaining(t0), Some(Duration::from_secs(100)));
}

#[tokio::test]
async fn concurrency_cap_holds_extra_requests() {
    let g = gov();
    let a = g.acquire().await;
    let _b = g.acquire().await;
    let mut third = Box::pin(g.acquire());
    assert!((&mut third).now_or_never().is_none(), "third slot granted");
    drop(a);
    assert!(third.now_or_never().is_some(), "slot not released");
}

#[tokio::test]
async fn acquire_waits_while_paused() {
    let g = gov();
    let info = RateInfo {
        retry_after: Some(Duration::from_secs(30)),
        ..limited(429)
    };
    g.observe(&info, Instant::now(), EPOCH);
    assert!(Box::pin(g.acquire()).now_or_never().is_none());
}
