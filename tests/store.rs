//! The ledger's contract, on both databases: every test here runs on SQLite and on PostgreSQL
//! (a real server; see tests/common/postgres.rs), through the public `Store` interface.

#[path = "common/postgres.rs"]
mod postgres_harness;

use std::collections::HashMap;
use std::time::Duration;

use spokehub::hub::{
    apply, Channel, HubRunId, InstallationId, Lease, Policy, RepoName, ReportOutcome, Spoke,
    SpokeEvent, SpokeStatus, Transition, TransitionContext,
};
use spokehub::store::{
    now_ms, NewDelivery, NewRun, NewSpoke, OpenReadOnlyError, ReplicaId, Store, StoreError,
};

/// A database for one test: its URL (and the directory holding it, for SQLite).
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn sqlite() -> Option<Db> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Some(Db {
            url,
            _dir: Some(dir),
        })
    }

    async fn postgres() -> Option<Db> {
        let url = postgres_harness::fresh_database().await?;
        Some(Db { url, _dir: None })
    }

    async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }
}

/// Each named test, once per database.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::sqlite().await.unwrap();
                    super::$name(db).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::Db::postgres().await {
                        super::$name(db).await
                    }
                }
            )*
        }
    };
}

on_both_databases!(
    deliveries_are_recorded_once_and_queued_in_order,
    the_signing_key_survives_reopening,
    a_run_and_its_spokes_round_trip_and_transitions_persist,
    concurrent_transitions_of_one_spoke_are_serialized_and_none_is_lost,
    two_stores_on_one_database_never_lose_or_repeat_a_transition,
    committed_changes_reach_the_taker_in_commit_order,
    a_read_only_store_reads_and_refuses_writes,
    a_run_lease_is_held_by_one_replica_and_taken_over_when_it_expires,
    concurrent_claims_never_take_one_run_twice,
    deliveries_are_claimed_once_retried_after_a_back_off_and_finished,
    changes_read_from_a_mark_include_every_writers_commits,
    the_spokes_fingerprint_moves_with_every_change_and_the_newest_events_come_last,
    a_workers_lease_round_trips_through_the_ledger,
    signed_out_sessions_stay_ended,
    agents_are_known_by_their_token_until_revoked,
    concurrent_workers_never_hold_one_attempt_twice,
);

/// What the run page's live stream watches: one aggregate that changes with every spoke
/// change, and the newest events of a long log.
async fn the_spokes_fingerprint_moves_with_every_change_and_the_newest_events_come_last(db: Db) {
    let store = db.open().await;
    let (id, repos) = run_with_spokes(&store, 3).await;
    let before = store.spokes_fingerprint(&id).await.unwrap();
    assert_eq!(
        store.spokes_fingerprint(&id).await.unwrap(),
        before,
        "stable at rest"
    );
    let mut seen = vec![before];
    for event in [
        SpokeEvent::DispatchStarted,
        SpokeEvent::DispatchAccepted {
            run_id: Some(7),
            run_url: None,
        },
        SpokeEvent::Report {
            attempt: 1,
            run_id: Some(7),
            run_url: None,
            outcome: ReportOutcome::Running,
            channel: Channel::WorkflowRun,
            summary: None,
        },
    ] {
        store
            .transition(&id, &repos[1], decide(event))
            .await
            .unwrap();
        let now = store.spokes_fingerprint(&id).await.unwrap();
        assert!(!seen.contains(&now), "the fingerprint did not move: {now}");
        seen.push(now);
    }
    let (total, newest) = store.run_events_newest(&id, 2).await.unwrap();
    let all = store.run_events(&id).await.unwrap();
    assert_eq!(total as usize, all.len());
    assert!(all.len() >= 3);
    assert_eq!(
        newest,
        all[all.len() - 2..].to_vec(),
        "the newest two, oldest first"
    );
}

fn decide(event: SpokeEvent) -> impl Fn(&Spoke) -> Transition + Send + Sync + 'static {
    move |s: &Spoke| {
        let policy = Policy::default();
        apply(
            s,
            event.clone(),
            &TransitionContext {
                now: now_ms(),
                policy: &policy,
            },
        )
    }
}

/// A run with `n` planned spokes `acme/r0`.. (activated).
async fn run_with_spokes(store: &Store, n: usize) -> (HubRunId, Vec<RepoName>) {
    run_with_spokes_in(store, n, spokehub::hub::RunMode::Push).await
}

/// [`run_with_spokes`] in `mode`.
async fn run_with_spokes_in(
    store: &Store,
    n: usize,
    mode: spokehub::hub::RunMode,
) -> (HubRunId, Vec<RepoName>) {
    let id = HubRunId::new_random();
    let hub: RepoName = "acme/hub".parse().unwrap();
    store
        .insert_run(&NewRun {
            id,
            installation_id: InstallationId(1),
            hub_repo: &hub,
            task: "t",
            targets: "",
            params: "{}",
            dry_run: false,
            git_ref: "main",
            sender: "s",
            trigger_delivery: None,
            deadline_at: now_ms() + 60_000,
            mode,
        })
        .await
        .unwrap();
    let repos: Vec<RepoName> = (0..n)
        .map(|i| format!("acme/r{i}").parse().unwrap())
        .collect();
    let spokes: Vec<NewSpoke> = repos
        .iter()
        .map(|r| NewSpoke {
            repo: r.clone(),
            default_branch: "main".into(),
            status: SpokeStatus::Planned,
            reason: None,
        })
        .collect();
    store
        .activate_run(&id, &"b".repeat(40).parse().unwrap(), &spokes)
        .await
        .unwrap();
    (id, repos)
}

/// Two stores on one database, as two hub processes would have: every spoke gets the same
/// event from both at once, and each is started exactly once (the other sees it started).
async fn two_stores_on_one_database_never_lose_or_repeat_a_transition(db: Db) {
    let a = db.open().await;
    let b = db.open().await;
    let (id, repos) = run_with_spokes(&a, 40).await;
    let mut tasks = Vec::new();
    for repo in &repos {
        for store in [&a, &b, &a, &b] {
            let (store, repo) = (store.clone(), repo.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .transition(&id, &repo, decide(SpokeEvent::DispatchStarted))
                    .await
                    .unwrap()
            }));
        }
    }
    let mut changed = 0;
    for t in tasks {
        if matches!(t.await.unwrap().transition, Transition::Changed(_)) {
            changed += 1;
        }
    }
    assert_eq!(
        changed, 40,
        "each spoke started exactly once over both stores"
    );
    for s in b.spokes(&id).await.unwrap() {
        assert_eq!(
            (s.spoke.status, s.spoke.attempt),
            (SpokeStatus::Dispatching, 1)
        );
    }
    assert_eq!(a.count_events("transition").await.unwrap(), 40);
}

/// What the taker of `take_changes` sees is what was committed, in the order it committed:
/// per spoke, the same sequence as the event log.
async fn committed_changes_reach_the_taker_in_commit_order(db: Db) {
    let store = db.open().await;
    if store.is_shared() {
        // Several processes write a shared ledger: drivers read changes from it instead
        // (`changes_read_from_a_mark_include_every_writers_commits`).
        let mut changes = store.take_changes().expect("first taker");
        let _ = run_with_spokes(&store, 3).await;
        assert!(
            changes.recv().await.is_none(),
            "nothing published in-process"
        );
        return;
    }
    let mut changes = store.take_changes().expect("first taker");
    assert!(store.take_changes().is_none(), "one taker only");
    let (id, repos) = run_with_spokes(&store, 30).await;
    let mut tasks = Vec::new();
    for repo in &repos {
        for event in [
            SpokeEvent::DispatchStarted,
            SpokeEvent::DispatchAccepted {
                run_id: None,
                run_url: None,
            },
            SpokeEvent::DispatchStarted,
        ] {
            let (store, repo) = (store.clone(), repo.clone());
            tasks.push(tokio::spawn(async move {
                store.transition(&id, &repo, decide(event)).await.unwrap()
            }));
        }
    }
    let mut published = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if matches!(
            r.transition,
            Transition::Changed(_) | Transition::Conflict { .. }
        ) {
            published += 1;
        }
    }
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..published {
        let (run, spoke) = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("a published change")
            .expect("channel open");
        assert_eq!(run, id);
        seen.entry(spoke.repo.to_string())
            .or_default()
            .push(spoke.status.as_str().to_owned());
    }
    assert!(changes.try_recv().is_err(), "nothing published twice");
    // The event log says, per spoke, "a -> b (attempt n)" in commit order.
    let mut logged: HashMap<String, Vec<String>> = HashMap::new();
    for (repo, detail) in store.events("transition").await.unwrap() {
        let to = detail
            .split(" -> ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        logged.entry(repo.unwrap()).or_default().push(to.to_owned());
    }
    assert_eq!(seen, logged);
}

/// `spokehub status` reads through a read-only store: it sees what serve wrote, and cannot
/// write.
async fn a_read_only_store_reads_and_refuses_writes(db: Db) {
    let store = db.open().await;
    let (id, _) = run_with_spokes(&store, 3).await;
    let ro = Store::open_read_only(&db.url).await.unwrap();
    assert_eq!(ro.spokes(&id).await.unwrap().len(), 3);
    assert_eq!(ro.latest_run_id().await.unwrap(), Some(id));
    assert!(ro.request_cancel(&id, "nope").await.is_err());
    assert!(ro
        .record_delivery(&NewDelivery {
            guid: "g",
            event: "e",
            action: None,
            installation_id: None,
            payload: bytes::Bytes::from_static(b"{}"),
        })
        .await
        .is_err());
    let run = store.run(&id).await.unwrap().unwrap();
    assert_eq!((run.reason, run.cancel_requested), (None, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_together_migrate_once() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    // Four processes' starts at once (concurrent on one runtime: the same race).
    let opens = (0..4).map(|_| Store::open(&db.url));
    for opened in futures::future::join_all(opens).await {
        opened.expect("every replica starts");
    }
    let store = db.open().await;
    assert!(store.latest_run_id().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_status_on_a_missing_database_creates_nothing() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let missing = format!("{}_missing", db.url);
    match Store::open_read_only(&missing).await {
        Err(OpenReadOnlyError::Missing(what)) => assert!(what.contains("_missing"), "{what}"),
        Err(e) => panic!("expected Missing, got {e}"),
        Ok(_) => panic!("opened a database that does not exist"),
    }
    // An empty database is not a ledger either (and stays empty).
    match Store::open_read_only(&db.url).await {
        Err(OpenReadOnlyError::Missing(what)) => assert!(what.contains("no spokehub ledger")),
        Err(e) => panic!("expected Missing, got {e}"),
        Ok(_) => panic!("an empty database read as a ledger"),
    }
}

/// Health on Postgres is a write round trip; `check_writable` answers from the last one, and
/// heals by itself once the database takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_follows_whether_writes_commit() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let store = db.open().await;
    store.health().await.unwrap();
    store.check_writable().unwrap();
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let admin = db.url.rsplit_once('/').unwrap().0.to_owned() + "/postgres";
    let set = |read_only: bool| {
        let (admin, name) = (admin.clone(), name.clone());
        async move {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            let verb = if read_only {
                "SET default_transaction_read_only = on"
            } else {
                "RESET default_transaction_read_only"
            };
            sqlx::query(&format!("ALTER DATABASE {name} {verb}"))
                .execute(&mut c)
                .await
                .unwrap();
            // Existing sessions keep their settings: end them, so the pool reconnects.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&name)
            .execute(&mut c)
            .await
            .unwrap();
        }
    };
    set(true).await;
    // The database refuses writes (as a standby would): health says so, and so does the cheap
    // check afterwards, without a round trip of its own.
    let mut refused = None;
    for _ in 0..20 {
        match store.health().await {
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let refused = refused.expect("health fails while the database is read-only");
    eprintln!("health while read-only: {refused}");
    assert!(matches!(
        store.check_writable(),
        Err(StoreError::Unavailable(_))
    ));
    set(false).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.check_writable().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "check_writable never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.health().await.unwrap();
}

async fn deliveries_are_recorded_once_and_queued_in_order(db: Db) {
    let store = db.open().await;
    let d = |guid| NewDelivery {
        guid,
        event: "workflow_run",
        action: Some("completed"),
        installation_id: Some(1),
        payload: bytes::Bytes::from_static(b"{}"),
    };
    assert!(store.record_delivery(&d("a")).await.unwrap());
    assert!(store.record_delivery(&d("b")).await.unwrap());
    assert!(!store.record_delivery(&d("a")).await.unwrap());
    let pending = store.pending_deliveries(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.guid.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    store.finish_delivery("a", "done").await.unwrap();
    assert_eq!(store.pending_deliveries(10).await.unwrap().len(), 1);
    assert_eq!(store.count_deliveries().await.unwrap(), 2);
    // Pruning forgets what was processed before the cut, never what waits.
    assert_eq!(store.prune_deliveries(now_ms() - 60_000).await.unwrap(), 0);
    assert_eq!(store.prune_deliveries(now_ms() + 1).await.unwrap(), 1);
    assert_eq!(store.count_deliveries().await.unwrap(), 1);
    assert_eq!(store.pending_deliveries(10).await.unwrap()[0].guid, "b");
}

async fn the_signing_key_survives_reopening(db: Db) {
    let first = db.open().await.signing_key().await.unwrap();
    let again = db.open().await.signing_key().await.unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(first, again);
}

async fn a_run_and_its_spokes_round_trip_and_transitions_persist(db: Db) {
    let store = db.open().await;
    let id = HubRunId::new_random();
    let hub: RepoName = "acme/hub".parse().unwrap();
    let run = NewRun {
        id,
        installation_id: InstallationId(9),
        hub_repo: &hub,
        task: "scan",
        targets: "",
        params: "{}",
        dry_run: false,
        git_ref: "main",
        sender: "octocat",
        trigger_delivery: Some("guid-1"),
        deadline_at: now_ms() + 60_000,
        mode: spokehub::hub::RunMode::Push,
    };
    assert!(store.insert_run(&run).await.unwrap());
    let again = NewRun {
        id: HubRunId::new_random(),
        ..run
    };
    assert!(
        !store.insert_run(&again).await.unwrap(),
        "same trigger twice"
    );
    let repo: RepoName = "acme/svc".parse().unwrap();
    let sha = "a".repeat(40).parse().unwrap();
    let spokes = vec![
        NewSpoke {
            repo: repo.clone(),
            default_branch: "main".into(),
            status: SpokeStatus::Planned,
            reason: None,
        },
        NewSpoke {
            repo: "acme/old".parse().unwrap(),
            default_branch: "main".into(),
            status: SpokeStatus::Skipped,
            reason: Some("archived".into()),
        },
    ];
    store.activate_run(&id, &sha, &spokes).await.unwrap();
    let loaded = store.run(&id).await.unwrap().unwrap();
    assert_eq!(loaded.status.as_str(), "active");
    assert_eq!(loaded.head_sha, Some(sha));
    let decide = |event: SpokeEvent| {
        move |s: &spokehub::hub::Spoke| {
            let policy = Policy::default();
            let ctx = TransitionContext {
                now: now_ms(),
                policy: &policy,
            };
            apply(s, event.clone(), &ctx)
        }
    };
    let rec = store
        .transition(&id, &repo, decide(SpokeEvent::DispatchStarted))
        .await
        .unwrap();
    assert!(matches!(rec.transition, Transition::Changed(_)));
    let rec = store
        .transition(
            &id,
            &repo,
            decide(SpokeEvent::DispatchAccepted {
                run_id: Some(77),
                run_url: Some("u".into()),
            }),
        )
        .await
        .unwrap();
    assert_eq!(rec.current().status, SpokeStatus::Dispatched);
    let stored = store.spoke(&id, &repo).await.unwrap().unwrap().spoke;
    assert_eq!(stored.status, SpokeStatus::Dispatched);
    assert_eq!((stored.attempt, stored.workflow_run_id), (1, Some(77)));
    assert_eq!(
        store.spoke_by_workflow_run(77).await.unwrap(),
        Some((id, repo.clone()))
    );
    assert_eq!(store.count_events("transition").await.unwrap(), 2);
    let all = store.spokes(&id).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].spoke.reason.as_deref(), Some("archived"));
}

async fn concurrent_transitions_of_one_spoke_are_serialized_and_none_is_lost(db: Db) {
    let store = db.open().await;
    let (id, repos) = run_with_spokes(&store, 50).await;
    // Every spoke gets two conflicting-order events from many tasks at once; the writer
    // batches them, and each spoke must end dispatched exactly once (attempt 1).
    let mut tasks = Vec::new();
    for repo in &repos {
        for event in [SpokeEvent::DispatchStarted, SpokeEvent::DispatchStarted] {
            let store = store.clone();
            let repo = repo.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .transition(&id, &repo, move |s| {
                        let policy = Policy::default();
                        apply(
                            s,
                            event.clone(),
                            &TransitionContext {
                                now: now_ms(),
                                policy: &policy,
                            },
                        )
                    })
                    .await
                    .unwrap()
            }));
        }
    }
    let mut changed = 0;
    for t in tasks {
        if matches!(t.await.unwrap().transition, Transition::Changed(_)) {
            changed += 1;
        }
    }
    assert_eq!(changed, 50, "each spoke started exactly once");
    for s in store.spokes(&id).await.unwrap() {
        assert_eq!(s.spoke.status, SpokeStatus::Dispatching);
        assert_eq!(s.spoke.attempt, 1);
    }
    let missing = store
        .transition(&id, &"acme/nope".parse().unwrap(), |_| {
            Transition::Unchanged
        })
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

fn replica(name: &str) -> ReplicaId {
    ReplicaId::new(name)
}

/// One replica holds a run's lease; another cannot claim it until it expires, then takes it
/// over, and the first one's renewal no longer finds it. A failed driver's release makes the
/// run wait out the back-off.
async fn a_run_lease_is_held_by_one_replica_and_taken_over_when_it_expires(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let (id, _) = run_with_spokes(&a, 1).await;
    let long = Duration::from_secs(60);
    assert_eq!(
        a.claim_runs(&replica("a"), long, 10).await.unwrap(),
        [(id, false)]
    );
    assert!(b
        .claim_runs(&replica("b"), long, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(a.renew_runs(&replica("a"), long).await.unwrap(), [id]);
    // a's lease runs out (a stalled or died).
    assert_eq!(
        a.renew_runs(&replica("a"), Duration::from_millis(1))
            .await
            .unwrap(),
        [id]
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Taken over (on SQLite one process holds every lease, so nothing is ever taken over).
    assert_eq!(
        b.claim_runs(&replica("b"), long, 10).await.unwrap(),
        [(id, a.is_shared())]
    );
    assert!(
        a.renew_runs(&replica("a"), long).await.unwrap().is_empty(),
        "a lost it"
    );
    // a's release changes nothing: the lease is b's.
    a.release_run(&id, &replica("a"), None).await.unwrap();
    assert!(a
        .claim_runs(&replica("a"), long, 10)
        .await
        .unwrap()
        .is_empty());
    // b's driver failed: released, but due only after the back-off.
    b.release_run(&id, &replica("b"), Some("GitHub is down"))
        .await
        .unwrap();
    assert!(a
        .claim_runs(&replica("a"), long, 10)
        .await
        .unwrap()
        .is_empty());
    // A completed run is never claimed.
    a.complete_run(&id, "success", None).await.unwrap();
    let (other, _) = run_with_spokes(&a, 1).await;
    assert_eq!(
        a.claim_runs(&replica("a"), long, 10).await.unwrap(),
        [(other, false)]
    );
    // A restarted replica takes back what it held (on SQLite: one process holds everything).
    a.release_leases_of(&replica("a")).await.unwrap();
    assert_eq!(
        b.claim_runs(&replica("b"), long, 10).await.unwrap(),
        [(other, false)]
    );
}

/// Replicas claiming at once take different runs, and together all of them.
async fn concurrent_claims_never_take_one_run_twice(db: Db) {
    let store = db.open().await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(run_with_spokes(&store, 1).await.0);
    }
    let mut tasks = Vec::new();
    for r in 0..4 {
        let store = db.open().await;
        tasks.push(tokio::spawn(async move {
            let me = replica(&format!("r{r}"));
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_runs(&me, Duration::from_secs(60), 3)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|(id, _)| id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(n, all.len(), "a run was claimed twice");
    ids.sort();
    assert_eq!(all, ids);
}

/// Deliveries are claimed oldest first (on a shared ledger by one replica at a time; on SQLite
/// one process handles them, one batch at a time, and a claim is a read), a failed one waits
/// out its back-off with its try count and error kept, and a finished one is never claimed
/// again.
async fn deliveries_are_claimed_once_retried_after_a_back_off_and_finished(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    for guid in ["g1", "g2", "g3"] {
        a.record_delivery(&NewDelivery {
            guid,
            event: "workflow_run",
            action: None,
            installation_id: Some(1),
            payload: bytes::Bytes::from_static(b"{}"),
        })
        .await
        .unwrap();
    }
    let ttl = Duration::from_secs(60);
    let first = a.claim_deliveries(&replica("a"), ttl, 2).await.unwrap();
    let guids: Vec<&str> = first.iter().map(|d| d.guid.as_str()).collect();
    assert_eq!(guids, ["g1", "g2"]);
    assert!(first.iter().all(|d| d.tries == 1 && d.size == 2));
    if a.is_shared() {
        // Another replica takes only what is not leased.
        let second = b.claim_deliveries(&replica("b"), ttl, 10).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].guid, "g3");
    }
    let payloads = a.delivery_payloads(&first).await.unwrap();
    assert_eq!(payloads.len(), 2);
    assert_eq!(payloads[0].guid, "g1");
    assert_eq!(payloads[0].payload, b"{}");
    a.retry_delivery("g1", &replica("a"), 1, "GitHub is down")
        .await
        .unwrap();
    a.finish_delivery("g2", "done").await.unwrap();
    b.finish_delivery("g3", "done").await.unwrap();
    // g1 waits out its back-off (2 s); g2 and g3 are done.
    assert!(b
        .claim_deliveries(&replica("b"), ttl, 10)
        .await
        .unwrap()
        .is_empty());
    let pending = a.pending_deliveries(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].guid, "g1");
}

/// With a shared ledger, a driver reads the changes made by every writer (other processes
/// included) from a mark: nothing committed after the mark is missed, and a read from the
/// next mark of a quiet ledger is empty.
async fn changes_read_from_a_mark_include_every_writers_commits(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    if !a.is_shared() {
        return; // SQLite has one writer; its changes are published in-process.
    }
    let (id, repos) = run_with_spokes(&a, 20).await;
    // A mark is the oldest transaction still running anywhere in the cluster (other tests'
    // databases included), so it can lag behind the run's creation for a moment: wait for
    // one past it (a quiet moment), from which nothing is read before any change.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mark = loop {
        let mark = a.change_mark().await.unwrap();
        let (unchanged, _) = a.spoke_changes(&id, mark).await.unwrap();
        if unchanged.is_empty() {
            break mark;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} spokes still read before any change after 30 s",
            unchanged.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut tasks = Vec::new();
    for (i, repo) in repos.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let store = if i % 4 == 0 { a.clone() } else { b.clone() };
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            store
                .transition(&id, &repo, decide(SpokeEvent::DispatchStarted))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (changed, next) = a.spoke_changes(&id, mark).await.unwrap();
    let mut names: Vec<String> = changed.iter().map(|r| r.spoke.repo.to_string()).collect();
    names.sort();
    let mut expected: Vec<String> = repos
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, r)| r.to_string())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(changed
        .iter()
        .all(|r| r.spoke.status == SpokeStatus::Dispatching));
    // The mark is the oldest transaction still running anywhere in the cluster (other tests'
    // databases included): while one runs, changes may be read again (drivers apply them
    // idempotently). Once nothing older is running, the next mark is past them all.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut mark = next;
    loop {
        let (again, next) = a.spoke_changes(&id, mark).await.unwrap();
        if again.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} changes still read again after 30 s",
            again.len()
        );
        mark = next;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pulled work's lease is part of the spoke as stored: claimed, heartbeated, ended.
async fn a_workers_lease_round_trips_through_the_ledger(db: Db) {
    let store = db.open().await;
    let (id, repos) = run_with_spokes(&store, 1).await;
    let repo = &repos[0];
    store
        .transition(&id, repo, decide(SpokeEvent::Enqueue))
        .await
        .unwrap();
    let until = now_ms() + 60_000;
    let claimed = store
        .transition(
            &id,
            repo,
            decide(SpokeEvent::Claim {
                lease: Lease {
                    id: "lease-1".into(),
                    worker: "agent-a".into(),
                    until,
                },
            }),
        )
        .await
        .unwrap();
    assert_eq!(claimed.current().status, SpokeStatus::Running);
    let read = store.spoke(&id, repo).await.unwrap().unwrap().spoke;
    let lease = read.lease.expect("the lease is stored");
    assert_eq!(
        (lease.id.as_str(), lease.worker.as_str(), lease.until),
        ("lease-1", "agent-a", until)
    );
    store
        .transition(
            &id,
            repo,
            decide(SpokeEvent::Heartbeat {
                lease_id: "lease-1".into(),
                until: until + 1_000,
            }),
        )
        .await
        .unwrap();
    let read = store.spoke(&id, repo).await.unwrap().unwrap().spoke;
    assert_eq!(read.lease.unwrap().until, until + 1_000);
    let done = store
        .transition(
            &id,
            repo,
            decide(SpokeEvent::Complete {
                lease_id: "lease-1".into(),
                outcome: ReportOutcome::Succeeded,
                summary: Some("ok".into()),
            }),
        )
        .await
        .unwrap();
    assert_eq!(done.current().status, SpokeStatus::Succeeded);
    let read = store.spoke(&id, repo).await.unwrap().unwrap().spoke;
    assert!(read.lease.is_none(), "the lease ends with the attempt");
    assert_eq!(read.summary.as_deref(), Some("ok"));
}

/// A signed-out run-page session stays ended until it would have expired; old ones are pruned.
async fn signed_out_sessions_stay_ended(db: Db) {
    let store = db.open().await;
    assert!(!store.session_ended("s1").await.unwrap());
    store.end_session("s1", now_ms() + 60_000).await.unwrap();
    store.end_session("s1", now_ms() + 60_000).await.unwrap();
    assert!(store.session_ended("s1").await.unwrap());
    assert!(!store.session_ended("s2").await.unwrap());
    // An entry past its time is pruned by the next sign-out.
    store.end_session("old", now_ms() - 1).await.unwrap();
    store.end_session("s3", now_ms() + 60_000).await.unwrap();
    assert!(!store.session_ended("old").await.unwrap());
    assert!(store.session_ended("s1").await.unwrap());
}

/// Agents of pulled work: added with a token kept as a hash, known by it until revoked, and
/// seen when it is used.
async fn agents_are_known_by_their_token_until_revoked(db: Db) {
    use spokehub::work::agents::{authenticate, new_token, AgentRefused};
    let store = db.open().await;
    let (token, hash) = new_token();
    assert!(store.add_agent("cluster-eu", &hash).await.unwrap());
    let (other, other_hash) = new_token();
    assert!(
        !store.add_agent("cluster-eu", &other_hash).await.unwrap(),
        "an active agent's name is taken"
    );
    let listed = store.agents().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_seen_at.is_none());
    let agent = authenticate(&store, Some(&token)).await.unwrap();
    assert_eq!(agent.name, "cluster-eu");
    assert!(
        store.agents().await.unwrap()[0].last_seen_at.is_some(),
        "contact noted"
    );
    assert!(matches!(
        authenticate(&store, Some(&other)).await,
        Err(AgentRefused::Unknown)
    ));
    assert!(matches!(
        authenticate(&store, None).await,
        Err(AgentRefused::Missing)
    ));
    assert!(matches!(
        authenticate(&store, Some("ghs_installation_token")).await,
        Err(AgentRefused::Unknown)
    ));
    assert!(store.revoke_agent("cluster-eu").await.unwrap());
    assert!(!store.revoke_agent("cluster-eu").await.unwrap(), "once");
    assert!(matches!(
        authenticate(&store, Some(&token)).await,
        Err(AgentRefused::Unknown)
    ));
    assert!(store.agents().await.unwrap()[0].revoked_at.is_some());
    // A revoked name may be added again, with a new token; the old one stays dead.
    let (fresh, fresh_hash) = new_token();
    assert!(store.add_agent("cluster-eu", &fresh_hash).await.unwrap());
    assert_eq!(
        authenticate(&store, Some(&fresh)).await.unwrap().name,
        "cluster-eu"
    );
    assert!(authenticate(&store, Some(&token)).await.is_err());
    assert!(store.agents().await.unwrap()[0].revoked_at.is_none());
}

/// Claims of pulled work, from several workers on two stores at once: every queued spoke is
/// claimed exactly once, each under the lease handed out for it; spokes of push runs are
/// never work.
async fn concurrent_workers_never_hold_one_attempt_twice(db: Db) {
    use spokehub::hub::RunMode;
    use spokehub::store::WorkScope;
    use spokehub::work::claim::{claim, run_of_lease};
    let (a, b) = (db.open().await, db.open().await);
    let (pull, repos) = run_with_spokes_in(&a, 40, RunMode::Pull).await;
    assert_eq!(a.run(&pull).await.unwrap().unwrap().mode, RunMode::Pull);
    for r in &repos {
        a.transition(&pull, r, decide(SpokeEvent::Enqueue))
            .await
            .unwrap();
    }
    let (push, push_repos) = run_with_spokes(&a, 5).await;
    for r in &push_repos {
        a.transition(&push, r, decide(SpokeEvent::DispatchStarted))
            .await
            .unwrap();
        a.transition(
            &push,
            r,
            decide(SpokeEvent::DispatchAccepted {
                run_id: None,
                run_url: None,
            }),
        )
        .await
        .unwrap();
    }
    let mut workers = Vec::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = claim(
                    &store,
                    &WorkScope::Agent("pool".into()),
                    &format!("w{w}"),
                    3,
                    |_| Policy::default(),
                )
                .await
                .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let mut names: Vec<String> = all.iter().map(|c| c.repo.to_string()).collect();
    names.sort();
    let mut expected: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "each queued spoke claimed exactly once");
    for c in &all {
        assert_eq!(c.run, pull);
        assert_eq!(
            run_of_lease(&c.lease.id),
            Some(pull),
            "a lease names its run"
        );
        assert_eq!(
            a.spoke_by_lease(&c.lease.id).await.unwrap(),
            Some((pull, c.repo.clone())),
            "a lease finds its spoke"
        );
        assert_eq!(c.attempt, 1);
        let s = a.spoke(&pull, &c.repo).await.unwrap().unwrap().spoke;
        assert_eq!(s.status, SpokeStatus::Running);
        assert_eq!(
            s.lease.as_ref().map(|l| &l.id),
            Some(&c.lease.id),
            "the lease handed out"
        );
    }
    for r in &push_repos {
        let s = a.spoke(&push, r).await.unwrap().unwrap().spoke;
        assert_eq!(
            s.status,
            SpokeStatus::Dispatched,
            "push spokes are not pulled work"
        );
        assert!(s.lease.is_none());
    }
    // A hybrid run's items are its own workers' only.
    let (hybrid, hybrid_repos) = run_with_spokes_in(&a, 3, RunMode::Hybrid).await;
    for r in &hybrid_repos {
        a.transition(&hybrid, r, decide(SpokeEvent::Enqueue))
            .await
            .unwrap();
    }
    let policy = |_: &spokehub::store::RunRecord| Policy::default();
    for scope in [WorkScope::Agent("pool".into()), WorkScope::RunWorkers(pull)] {
        let got = claim(&b, &scope, "other", 10, policy).await.unwrap();
        assert!(got.is_empty(), "{scope:?} claimed a hybrid run's item");
    }
    let got = claim(&b, &WorkScope::RunWorkers(hybrid), "job", 10, policy)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
}
