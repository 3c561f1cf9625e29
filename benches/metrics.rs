//! What a Prometheus scrape of `/metrics` costs the hub with 10,000 spokes in the ledger: the
//! ledger reads (active spokes of the runs this replica drives, the queue depth) and the
//! encoding, as the handler does them, on SQLite (whose queries run in the hub's process, so
//! their CPU counts). Reports the process CPU time per scrape (mean and worst of 200).
//!
//! `cargo bench --bench metrics`

use std::time::Duration;

use spokehub::hub::{HubRunId, InstallationId, RepoName, SpokeStatus};
use spokehub::store::{now_ms, NewRun, NewSpoke, ReplicaId, Store};
use spokehub::telemetry::Telemetry;

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .unwrap();
    let me = ReplicaId::new("bench");
    let hub: RepoName = "acme/hub".parse().unwrap();
    let id = HubRunId::new_random();
    store
        .insert_run(&NewRun {
            id,
            installation_id: InstallationId(1),
            hub_repo: &hub,
            task: "bench",
            targets: "",
            params: "{}",
            dry_run: false,
            git_ref: "main",
            sender: "bench",
            trigger_delivery: None,
            deadline_at: now_ms() + 3_600_000,
            mode: spokehub::hub::RunMode::Push,
        })
        .await
        .unwrap();
    let spokes: Vec<NewSpoke> = (0..10_000)
        .map(|i| NewSpoke {
            repo: format!("acme/svc-{i:05}").parse().unwrap(),
            default_branch: "main".into(),
            status: SpokeStatus::Planned,
            reason: None,
        })
        .collect();
    store
        .activate_run(&id, &"a".repeat(40).parse().unwrap(), &spokes)
        .await
        .unwrap();
    store
        .claim_runs(&me, Duration::from_secs(3600), 1)
        .await
        .unwrap();
    let t = Telemetry::new();
    t.task_seen("bench");
    for i in 0..200 {
        t.github_request(
            "POST",
            &format!("/repos/acme/svc-{i}/actions/workflows/w.yml/dispatches"),
            204,
        );
        t.dispatch_duration.observe(0.01);
    }
    let mut costs = Vec::new();
    let mut bytes = 0;
    for _ in 0..200 {
        let before = process_cpu();
        let counts = store.active_spokes_of(&me).await.unwrap();
        let queued = store.queued_deliveries().await.unwrap();
        bytes = t.scrape(Some(&counts), Some(queued)).len();
        costs.push(process_cpu() - before);
    }
    let active: i64 = store
        .active_spokes_of(&me)
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(active, 10_000);
    costs.sort();
    let mean = costs.iter().sum::<Duration>() / costs.len() as u32;
    println!(
        "metrics bench: SQLite | 10000 spokes | scrape CPU mean {:.2} ms, p99 {:.2} ms, worst {:.2} ms | {bytes} bytes",
        mean.as_secs_f64() * 1e3,
        costs[costs.len() * 99 / 100].as_secs_f64() * 1e3,
        costs.last().unwrap().as_secs_f64() * 1e3,
    );
}
