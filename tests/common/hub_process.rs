//! Crash-test harness: the real `spokehub serve` process against an in-process emulator,
//! killed with SIGKILL at chosen moments and started again on the same database. The hub
//! benchmark starts its hub process with it too.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};
use spokehub::report::{run_report, RunReport};

pub struct HubProcess {
    child: Child,
}

impl HubProcess {
    pub fn start(emulator: &EmulatorHandle, dir: &std::path::Path, listen: &str) -> HubProcess {
        Self::start_with_open_files(emulator, dir, listen, None)
    }

    /// [`HubProcess::start`] on the database at `database_url` (default: SQLite in `dir`).
    pub fn start_on(
        emulator: &EmulatorHandle,
        dir: &std::path::Path,
        listen: &str,
        database_url: Option<&str>,
    ) -> HubProcess {
        Self::spawn(emulator, dir, listen, None, database_url, &[])
    }

    /// One replica of several on the Postgres ledger at `database_url`, named `replica_id`.
    pub fn start_replica(
        emulator: &EmulatorHandle,
        dir: &std::path::Path,
        listen: &str,
        database_url: &str,
        replica_id: &str,
    ) -> HubProcess {
        Self::spawn(
            emulator,
            dir,
            listen,
            None,
            Some(database_url),
            &[
                ("SPOKEHUB_REPLICA_ID", replica_id),
                ("SPOKEHUB_API_TOKEN", CLUSTER_API_TOKEN),
            ],
        )
    }

    /// [`HubProcess::start`] with a hard limit on open files (as a small container would have).
    pub fn start_with_open_files(
        emulator: &EmulatorHandle,
        dir: &std::path::Path,
        listen: &str,
        open_files: Option<u64>,
    ) -> HubProcess {
        Self::spawn(emulator, dir, listen, open_files, None, &[])
    }

    fn spawn(
        emulator: &EmulatorHandle,
        dir: &std::path::Path,
        listen: &str,
        open_files: Option<u64>,
        database_url: Option<&str>,
        extra_env: &[(&str, &str)],
    ) -> HubProcess {
        let database_url = database_url
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("hub.db").display()));
        // Written whole, then renamed into place: a replica starting meanwhile never reads it
        // half-written.
        let key = dir.join("app.pem");
        let partial = dir.join(format!("app.pem.{}", rand::random::<u64>()));
        std::fs::write(&partial, &emulator.private_key_pem).unwrap();
        std::fs::rename(&partial, &key).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_spokehub"));
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = command
            .arg("serve")
            .env_clear()
            .env("SPOKEHUB_APP_ID", emulator.app_id.to_string())
            .env("SPOKEHUB_PRIVATE_KEY_FILE", &key)
            .env("SPOKEHUB_WEBHOOK_SECRET", &emulator.webhook_secret)
            .env("SPOKEHUB_GITHUB_API_URL", &emulator.base_url)
            .env("SPOKEHUB_DATABASE_URL", &database_url)
            .env("SPOKEHUB_LISTEN", listen)
            .env("SPOKEHUB_HUB_REPOSITORY", &emulator.hub_repo)
            .env("SPOKEHUB_CONFIG", dir.join("spokehub.toml"))
            .env(
                "SPOKEHUB_LOG",
                std::env::var("SPOKEHUB_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spokehub starts");
        HubProcess { child }
    }

    /// The process id (for /proc readings).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (up to `limit`) for the process to exit: its exit status and how
    /// long it took.
    pub async fn terminate(mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "the hub did not exit within {limit:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn state(http: &reqwest::Client, emulator: &EmulatorHandle) -> Value {
    http.get(format!("{}/_emulator/state", emulator.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn wait_until_listening(http: &reqwest::Client, listen: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("http://{listen}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "hub did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn spoke_runs(state: &Value) -> Vec<&Value> {
    state["workflow_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["workflow"]
                .as_str()
                .is_some_and(|w| w.ends_with("spokehub-spoke.yml"))
        })
        .collect()
}

pub fn spoke_run_count(state: &Value) -> usize {
    spoke_runs(state).len()
}

/// What a crash run ended with.
pub struct CrashOutcome {
    /// The emulator's final state.
    pub state: Value,
    /// The hub's own record of the run, read from its database after the last process ended.
    pub report: RunReport,
    /// Kills that happened while the run was still going (its check run not completed).
    pub kills_during_run: usize,
}

/// Runs task `task` with the hub configured by `hub_toml` against `scenario`, killing the hub
/// once the emulator has seen each of `kill_after` spoke runs created (in order; a value past
/// the number of spokes kills it after every spoke was dispatched, once `extra_ms` has passed),
/// each kill after a further `delay_ms` pause. Waits for the check run to complete.
pub async fn kill_and_restart(
    scenario: &str,
    hub_toml: &str,
    task: &str,
    kills: &[(usize, u64)],
    within: Duration,
) -> CrashOutcome {
    kill_and_restart_on(None, scenario, hub_toml, task, kills, within).await
}

/// [`kill_and_restart`] with the hub's ledger at `database_url` (default: SQLite).
pub async fn kill_and_restart_on(
    database_url: Option<&str>,
    scenario: &str,
    hub_toml: &str,
    task: &str,
    kills: &[(usize, u64)],
    within: Duration,
) -> CrashOutcome {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spokehub.toml"), hub_toml).unwrap();
    let listen = free_listen();
    let scenario = Scenario::from_toml(scenario).unwrap();
    let emu_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = Emulator::start(
        emu_listener,
        scenario,
        format!("http://{listen}/webhook"),
        None,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();

    let mut hub = HubProcess::start_on(&emulator, dir.path(), &listen, database_url);
    wait_until_listening(&http, &listen).await;
    let pressed = http
        .post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                      "inputs": {"task": task}, "sender": "octocat"}))
        .send()
        .await
        .unwrap();
    assert!(pressed.status().is_success());

    let check_done = |s: &Value| {
        s["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == format!("spokehub: {task}") && c["status"] == "completed")
    };
    let mut kills_during_run = 0;
    for (k, &(threshold, delay_ms)) in kills.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = state(&http, &emulator).await;
            if spoke_run_count(&s) >= threshold || check_done(&s) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dispatch stalled before kill {k}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The moment within the chosen phase is random: this pause is part of the plan.
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if !check_done(&state(&http, &emulator).await) {
            kills_during_run += 1;
        }
        hub.kill();
        hub = HubProcess::start_on(&emulator, dir.path(), &listen, database_url);
        wait_until_listening(&http, &listen).await;
    }

    let deadline = Instant::now() + within;
    let final_state = loop {
        let s = state(&http, &emulator).await;
        if check_done(&s) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the run never completed after restarts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    hub.kill();
    let checks = final_state["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == format!("spokehub: {task}"))
        .count();
    assert_eq!(checks, 1, "a restart created a second check run");
    let sqlite = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = spokehub::store::Store::open(database_url.unwrap_or(&sqlite))
        .await
        .unwrap();
    let id = store.latest_run_id().await.unwrap().expect("a run exists");
    let report = run_report(&store, &id).await.unwrap().expect("run exists");
    emulator.shutdown().await;
    CrashOutcome {
        state: final_state,
        report,
        kills_during_run,
    }
}

/// The API token of every [`Cluster`] replica.
pub const CLUSTER_API_TOKEN: &str = "cluster-api-token";

/// Several hub replicas on one Postgres ledger behind the emulator's load balancer (each
/// delivery goes to one of them, round-robin), all sharing one configuration directory.
pub struct Cluster {
    pub emulator: EmulatorHandle,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub listens: Vec<String>,
    pub replicas: Vec<Option<HubProcess>>,
    pub http: reqwest::Client,
}

/// A free port below Linux's ephemeral range (32768 and up): a port the kernel hands out for
/// `:0` may be given to an outgoing connection before a restarted replica binds it again.
pub fn free_listen() -> String {
    use rand::Rng as _;
    loop {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
}

impl Cluster {
    /// Starts the emulator and `n` replicas named `replica-0`...; waits until all listen.
    pub async fn start(scenario: &str, hub_toml: &str, database_url: &str, n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spokehub.toml"), hub_toml).unwrap();
        let listens: Vec<String> = (0..n).map(|_| free_listen()).collect();
        let urls = listens
            .iter()
            .map(|l| format!("http://{l}/webhook"))
            .collect();
        let scenario = Scenario::from_toml(scenario).unwrap();
        let emu_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulator = Emulator::start_balanced(emu_listener, scenario, urls, None)
            .await
            .unwrap();
        let mut cluster = Cluster {
            emulator,
            dir,
            database_url: database_url.to_owned(),
            listens,
            replicas: Vec::new(),
            http: reqwest::Client::new(),
        };
        for i in 0..n {
            let p = cluster.spawn(i, &format!("replica-{i}"));
            cluster.replicas.push(Some(p));
        }
        for i in 0..n {
            wait_until_listening(&cluster.http, &cluster.listens[i]).await;
        }
        cluster
    }

    fn spawn(&self, i: usize, replica_id: &str) -> HubProcess {
        HubProcess::start_replica(
            &self.emulator,
            self.dir.path(),
            &self.listens[i],
            &self.database_url,
            replica_id,
        )
    }

    /// Starts replica `i` again (after a kill or a stop) as `replica_id`, and waits until it
    /// listens.
    pub async fn restart(&mut self, i: usize, replica_id: &str) {
        assert!(self.replicas[i].is_none(), "replica {i} is running");
        self.replicas[i] = Some(self.spawn(i, replica_id));
        wait_until_listening(&self.http, &self.listens[i]).await;
    }

    /// SIGKILLs replica `i`.
    pub fn kill(&mut self, i: usize) {
        self.replicas[i].take().expect("running").kill();
    }

    /// Presses the hub workflow's button for `task`.
    pub async fn trigger(&self, task: &str) {
        let pressed = self
            .http
            .post(format!("{}/_emulator/hub/dispatch", self.emulator.base_url))
            .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                          "inputs": {"task": task}, "sender": "octocat"}))
            .send()
            .await
            .unwrap();
        assert!(pressed.status().is_success());
    }

    pub async fn state(&self) -> Value {
        state(&self.http, &self.emulator).await
    }

    /// The check runs named `spokehub: {task}`.
    pub fn check_runs<'a>(state: &'a Value, task: &str) -> Vec<&'a Value> {
        state["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == format!("spokehub: {task}"))
            .collect()
    }

    /// Waits (up to `within`) until the run's check run completed; the final state.
    pub async fn wait_for_completion(&self, task: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.state().await;
            if Self::check_runs(&s, task)
                .iter()
                .any(|c| c["status"] == "completed")
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the run did not complete within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The hub's own record of the latest run, read from the ledger.
    pub async fn report(&self) -> RunReport {
        let store = spokehub::store::Store::open(&self.database_url)
            .await
            .unwrap();
        let id = store.latest_run_id().await.unwrap().expect("a run exists");
        run_report(&store, &id).await.unwrap().expect("run exists")
    }
}
