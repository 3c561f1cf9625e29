//! The intake against hostile clients, over real TCP on 127.0.0.1, with the real `spokehub
//! serve` process (so its memory is its own): slowloris headers, slow bodies, a declared
//! oversize length, idle connections past the open-file limit, stalled uploads. In each,
//! signed deliveries sent meanwhile are answered 202 within GitHub's 10 s, and the hub's
//! memory stays bounded.

mod common;
#[path = "common/hub_process.rs"]
mod hub_process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use common::sign;
use hub_process::{wait_until_listening, HubProcess};
use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};

/// GitHub's deadline for an answer.
const GITHUB_DEADLINE: Duration = Duration::from_secs(10);

struct Hub {
    emulator: EmulatorHandle,
    process: HubProcess,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(open_files: Option<u64>) -> Hub {
    // Every refusal below is a warning the hub logs; hundreds of them say nothing here.
    std::env::set_var("SPOKEHUB_LOG", "error");
    let dir = tempfile::tempdir().unwrap();
    // Not a `:0` port: one from the ephemeral range may go to an outgoing connection before
    // the hub binds it.
    let addr: SocketAddr = hub_process::free_listen().parse().unwrap();
    let scenario = Scenario::from_toml(&common::scenario(2, "")).unwrap();
    let emulator = Emulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario,
        format!("http://{addr}/webhook"),
        None,
    )
    .await
    .unwrap();
    std::fs::write(dir.path().join("spokehub.toml"), "").unwrap();
    let process =
        HubProcess::start_with_open_files(&emulator, dir.path(), &addr.to_string(), open_files);
    wait_until_listening(&reqwest::Client::new(), &addr.to_string()).await;
    Hub {
        emulator,
        process,
        addr,
        _dir: dir,
    }
}

impl Hub {
    /// Sends `n` genuine signed deliveries at once, each on its own connection; every one must
    /// be answered 202 within GitHub's deadline. Returns the slowest answer's time.
    async fn signed_deliveries_answered_in_time(&self, n: usize, tag: &str) -> Duration {
        let mut tasks = Vec::new();
        for i in 0..n {
            let body = serde_json::to_vec(&json!({
                "action": "not_for_spokehub",
                "branch": "main",
                "client_payload": {"n": i},
                "installation": {"id": self.emulator.installation_id},
                "repository": {"full_name": self.emulator.hub_repo},
                "sender": {"login": "octocat"},
            }))
            .unwrap();
            let signature = sign(&self.emulator.webhook_secret, &body);
            let url = format!("http://{}/webhook", self.addr);
            let guid = format!("{tag}-{i}");
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let resp = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap()
                    .post(url)
                    .header("x-github-event", "repository_dispatch")
                    .header("x-github-delivery", guid)
                    .header("x-hub-signature-256", signature)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("a signed delivery is answered");
                (resp.status().as_u16(), started.elapsed())
            }));
        }
        let mut slowest = Duration::ZERO;
        for t in tasks {
            let (status, took) = t.await.unwrap();
            assert_eq!(status, 202, "a signed delivery was refused");
            assert!(took < GITHUB_DEADLINE, "a signed delivery took {took:?}");
            slowest = slowest.max(took);
        }
        slowest
    }

    /// The hub's memory stayed bounded through an attack (peak resident memory).
    fn assert_memory_bounded(&self) {
        let (_, peak) = self.memory_mb();
        assert!(peak < 300.0, "the hub's memory peaked at {peak:.0} MB");
    }

    /// The hub process's resident memory now and at its peak, in MB.
    fn memory_mb(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// Reads until the server answers or closes; returns (status code or 0, when).
async fn answer_of(stream: &mut TcpStream, limit: Duration) -> (u16, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!("the hub neither answered nor closed within {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let status = String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, started.elapsed())
}

fn webhook_head(signature: Option<&str>, length: usize) -> String {
    let signature = signature
        .map(|s| format!("x-hub-signature-256: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /webhook HTTP/1.1\r\nhost: hub\r\nx-github-event: repository_dispatch\r\n\
         x-github-delivery: hostile\r\n{signature}content-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    )
}

/// Well-formed, but not made with the secret: the body must be read before it is refused.
fn forged_signature() -> String {
    format!("sha256={}", "0".repeat(64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_and_deliveries_go_on() {
    let hub = start(None).await;
    let mut clients = Vec::new();
    for _ in 0..300 {
        let addr = hub.addr;
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let started = Instant::now();
            s.write_all(b"POST /webhook HTTP/1.1\r\nhost: hub\r\n")
                .await
                .unwrap();
            // One more header line a second, never the end of the head.
            for i in 0..60 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s.write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return started.elapsed();
                }
                let mut probe = [0u8; 256];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
                {
                    return started.elapsed();
                }
            }
            panic!("a slowloris connection was held for a minute");
        }));
    }
    let slowest = hub
        .signed_deliveries_answered_in_time(20, "slowloris")
        .await;
    for c in clients {
        let held = c.await.unwrap();
        assert!(held < Duration::from_secs(12), "held {held:?}");
    }
    hub.assert_memory_bounded();
    eprintln!("slowloris: 300 connections; slowest signed delivery {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_and_deliveries_go_on() {
    let hub = start(None).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let addr = hub.addr;
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(webhook_head(Some(&forged_signature()), 100_000).as_bytes())
                .await
                .unwrap();
            let (mut rd, mut wr) = s.into_split();
            // Ten bytes a second.
            let trickle = tokio::spawn(async move {
                for _ in 0..100 {
                    if wr.write_all(b"          ").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let started = Instant::now();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut buf)).await;
            trickle.abort();
            let text = String::from_utf8_lossy(&buf).to_string();
            (text, started.elapsed())
        }));
    }
    let slowest = hub
        .signed_deliveries_answered_in_time(20, "slow-body")
        .await;
    for c in clients {
        let (answer, took) = c.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            took < Duration::from_secs(15),
            "a slow body was read for {took:?}"
        );
    }
    hub.assert_memory_bounded();
    eprintln!("slow bodies: 50 connections; slowest signed delivery {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversize_length_or_a_bad_signature_header_is_refused_before_the_body() {
    let hub = start(None).await;
    // 100 MB declared, nothing sent: answered at once from the head.
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(webhook_head(Some(&forged_signature()), 100_000_000).as_bytes())
        .await
        .unwrap();
    let (status, took) = answer_of(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status, 413);
    assert!(took < Duration::from_secs(2), "{took:?}");
    // No signature header, or a malformed one: refused without waiting for the body.
    for (signature, want) in [(None, 401), (Some("sha1=abc"), 400)] {
        let mut s = TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(webhook_head(signature, 20_000_000).as_bytes())
            .await
            .unwrap();
        let (status, took) = answer_of(&mut s, Duration::from_secs(5)).await;
        assert_eq!(status, want, "{signature:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    hub.signed_deliveries_answered_in_time(5, "after-oversize")
        .await;
    hub.assert_memory_bounded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_open_file_limit_do_not_stop_deliveries() {
    // The hub may open 1,024 files; 1,100 clients connect, say nothing, and connect again as
    // soon as the hub closes them, for 15 s.
    let hub = start(Some(1024)).await;
    // This test process needs more than 1,024 descriptors itself.
    spokehub::server::connections::connection_limit();
    let until = Instant::now() + Duration::from_secs(15);
    let mut attackers = Vec::new();
    for _ in 0..1100 {
        let addr = hub.addr;
        attackers.push(tokio::spawn(async move {
            let mut held = 0u32;
            while Instant::now() < until {
                let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
                else {
                    continue;
                };
                held += 1;
                let mut buf = [0u8; 16];
                let left = until.saturating_duration_since(Instant::now());
                if let Ok(Ok(n)) = tokio::time::timeout(left, s.read(&mut buf)).await {
                    assert_eq!(n, 0, "an idle connection got an answer");
                }
            }
            held
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        slowest = slowest.max(
            hub.signed_deliveries_answered_in_time(10, &format!("idle-{round}"))
                .await,
        );
        let started = Instant::now();
        let health = reqwest::Client::new()
            .get(format!("http://{}/healthz", hub.addr))
            .timeout(GITHUB_DEADLINE)
            .send()
            .await
            .expect("/healthz answers while idle connections are held");
        assert_eq!(health.status(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut connections = 0;
    for a in attackers {
        connections += a.await.unwrap();
    }
    hub.assert_memory_bounded();
    eprintln!(
        "idle: 1,100 clients at a 1,024-file limit made {connections} connections in 15 s; \
         slowest signed delivery or health check {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_stalled_uploads_hold_bounded_memory() {
    const DECLARED: usize = 25 * 1024 * 1024;
    const SENT_BEFORE_STALL: usize = 24 * 1024 * 1024;
    let hub = start(None).await;
    let (rss_before, _) = hub.memory_mb();
    let mut clients = Vec::new();
    for unsigned in [true, false] {
        for _ in 0..50 {
            let addr = hub.addr;
            clients.push(tokio::spawn(async move {
                let s = TcpStream::connect(addr).await.unwrap();
                let signature = (!unsigned).then(forged_signature);
                let (mut rd, mut wr) = s.into_split();
                wr.write_all(webhook_head(signature.as_deref(), DECLARED).as_bytes())
                    .await
                    .unwrap();
                // Up to 24 of 25 MiB, as fast as the hub takes them; then nothing.
                let writer = tokio::spawn(async move {
                    let chunk = vec![b' '; 64 * 1024];
                    let mut sent = 0;
                    while sent < SENT_BEFORE_STALL {
                        if wr.write_all(&chunk).await.is_err() {
                            return;
                        }
                        sent += chunk.len();
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
                let started = Instant::now();
                let mut buf = [0u8; 1024];
                let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
                    .await
                    .expect("a stalled upload is answered or closed within 30 s")
                    .unwrap_or(0);
                writer.abort();
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                (unsigned, text, started.elapsed())
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let slowest = hub.signed_deliveries_answered_in_time(10, "stalled").await;
    let mut statuses = std::collections::BTreeMap::new();
    for c in clients {
        let (unsigned, answer, _) = c.await.unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .unwrap_or("closed")
            .to_owned();
        if unsigned {
            assert_eq!(status, "401", "an unsigned upload was read: {answer}");
        } else {
            assert!(
                ["408", "503", "closed"].contains(&status.as_str()),
                "a stalled forged upload got {answer}"
            );
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    let (rss_after, peak) = hub.memory_mb();
    eprintln!(
        "stalled uploads: 100 x 25 MiB declared, 24 MiB sent; answers {statuses:?}; hub memory \
         {rss_before:.0} MB before, peak {peak:.0} MB, {rss_after:.0} MB after; slowest signed \
         delivery {slowest:?}"
    );
    assert!(peak < 300.0, "the hub's memory peaked at {peak:.0} MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_small_uploads_hold_no_room_they_did_not_fill() {
    // 200 clients declare 1 MiB each (together four times the room for small bodies), send a
    // kilobyte and stall: room is taken as bytes arrive, so deliveries still get in.
    let hub = start(None).await;
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(webhook_head(Some(&forged_signature()), 1024 * 1024).as_bytes())
            .await
            .unwrap();
        s.write_all(&[b' '; 1024]).await.unwrap();
        held.push(s);
    }
    let slowest = hub
        .signed_deliveries_answered_in_time(20, "small-stall")
        .await;
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    for mut s in held {
        let (status, _) = answer_of(&mut s, Duration::from_secs(30)).await;
        assert_eq!(status, 408, "a stalled small upload was not cut");
    }
    hub.assert_memory_bounded();
}
