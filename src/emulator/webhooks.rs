//! Webhook delivery as GitHub does it: signed POSTs from an async queue with bounded
//! concurrency, a 10 s timeout, no automatic retry, every delivery recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::Rng;
use secrecy::ExposeSecret;
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};

use super::json::{concat, Pieces};
use super::server::Shared;
use super::state::{Delivery, World};

/// Deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 32;
/// A receiver that does not answer within this time has failed the delivery.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The hook id GitHub shows for the App's webhook.
pub const HOOK_ID: u64 = 31_337;

/// One queued delivery: its id, and whether faults may touch it.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub delivery_id: u64,
    pub faults: bool,
}

/// `sha256=` + hex HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Records a delivery of `event` and queues it. Call with the world locked.
pub fn emit(
    shared: &Shared,
    world: &mut World,
    event: &str,
    action: Option<&str>,
    repository_id: Option<u64>,
    body: Pieces,
) -> u64 {
    let id = world.next_id();
    world.deliveries.push(Delivery {
        id,
        guid: uuid::Uuid::new_v4().to_string(),
        event: event.to_owned(),
        action: action.map(str::to_owned),
        repository_id,
        redelivery: false,
        delivered_at: chrono::Utc::now(),
        status_code: 0,
        status: "pending".into(),
        duration_ms: 0,
        url: None,
        body: Arc::new(body),
    });
    let _ = shared.hooks.send(Job {
        delivery_id: id,
        faults: true,
    });
    id
}

/// Records a redelivery of `original` (same GUID) and queues it. Call with the world locked.
pub fn redeliver(shared: &Shared, world: &mut World, original: u64) -> Option<u64> {
    let orig = world.delivery(original)?.clone();
    let id = world.next_id();
    world.deliveries.push(Delivery {
        id,
        redelivery: true,
        delivered_at: chrono::Utc::now(),
        status_code: 0,
        status: "pending".into(),
        duration_ms: 0,
        url: None,
        ..orig
    });
    let _ = shared.hooks.send(Job {
        delivery_id: id,
        faults: false,
    });
    Some(id)
}

/// Runs the delivery queue until the sender side is dropped.
pub async fn run_queue(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .unwrap_or_default();
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(job) = rx.recv().await {
        let faults = &shared.scenario.faults;
        let faulty = faults.webhook_drop_rate > 0.0
            || faults.webhook_duplicate_rate > 0.0
            || faults.webhook_delay_ms > 0;
        let (drop, dup, delay) = if job.faults && faulty {
            let mut w = shared.world();
            let drop = faults.webhook_drop_rate > 0.0 && w.rng.gen_bool(faults.webhook_drop_rate);
            let dup = faults.webhook_duplicate_rate > 0.0
                && w.rng.gen_bool(faults.webhook_duplicate_rate);
            let delay = if faults.webhook_delay_ms > 0 {
                w.rng.gen_range(0..=faults.webhook_delay_ms)
            } else {
                0
            };
            (drop, dup, delay)
        } else {
            (false, false, 0)
        };
        if drop {
            let mut w = shared.world();
            w.counters.webhooks_dropped += 1;
            if let Some(d) = w.delivery_mut(job.delivery_id) {
                d.status = "dropped".into();
            }
            continue;
        }
        let copies = if dup { 2 } else { 1 };
        if dup {
            shared
                .world
                .lock()
                .expect("world lock")
                .counters
                .webhooks_duplicated += 1;
        }
        for copy in 0..copies {
            let shared = shared.clone();
            let client = client.clone();
            let permits = permits.clone();
            tokio::spawn(async move {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                deliver(&shared, &client, job.delivery_id, copy > 0).await;
            });
        }
    }
}

/// Sends one delivery and records the outcome.
async fn deliver(shared: &Shared, client: &reqwest::Client, id: u64, duplicate: bool) {
    let Some((guid, event, body)) = ({
        let w = shared.world();
        w.delivery(id)
            .map(|d| (d.guid.clone(), d.event.clone(), d.body.clone()))
    }) else {
        return;
    };
    // Several URLs: one each, round-robin, as a load balancer spreads them; a URL that does
    // not answer fails that delivery (GitHub does not retry elsewhere).
    let Some(url) = shared.next_webhook_url() else {
        let mut w = shared.world();
        if let Some(d) = w.delivery_mut(id) {
            d.status = "no webhook url".into();
        }
        return;
    };
    let body = concat(&body).into_bytes();
    let sig = signature(shared.webhook_secret.expose_secret().as_bytes(), &body);
    let started = Instant::now();
    let result = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/emulated")
        .header("x-github-event", &event)
        .header("x-github-delivery", &guid)
        .header("x-hub-signature-256", sig)
        .header("x-github-hook-id", HOOK_ID.to_string())
        .header("x-github-hook-installation-target-type", "integration")
        .header(
            "x-github-hook-installation-target-id",
            shared.ctx.app_id.to_string(),
        )
        .body(body)
        .send()
        .await;
    let elapsed = started.elapsed().as_millis() as u64;
    let (code, status) = match result {
        Ok(r) => {
            let code = r.status().as_u16();
            let ok = r.status().is_success();
            (
                code,
                if ok {
                    "OK".to_owned()
                } else {
                    format!("Invalid HTTP Response: {code}")
                },
            )
        }
        Err(e) if e.is_timeout() => (0, "timed out".to_owned()),
        Err(_) => (0, "failed to connect".to_owned()),
    };
    let mut w = shared.world();
    w.counters.webhooks_sent += 1;
    if duplicate {
        // The duplicate is its own record, same GUID.
        let new_id = w.next_id();
        let Some(orig) = w.delivery(id).cloned() else {
            return;
        };
        w.deliveries.push(Delivery {
            id: new_id,
            status_code: code,
            status,
            duration_ms: elapsed,
            delivered_at: chrono::Utc::now(),
            url: Some(url.to_owned()),
            ..orig
        });
    } else if let Some(d) = w.delivery_mut(id) {
        d.status_code = code;
        d.status = status;
        d.duration_ms = elapsed;
        d.url = Some(url.to_owned());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_githubs_test_vector() {
        assert_eq!(
            super::signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
