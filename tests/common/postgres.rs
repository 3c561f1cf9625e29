//! A real PostgreSQL server for tests: `SPOKEHUB_TEST_POSTGRES_URL` when set (a server someone
//! else runs; the user must be allowed to create databases), else a throwaway cluster this test
//! binary starts itself (initdb + pg_ctl into a temporary directory, on a free loopback port,
//! as the `postgres` OS user when running as root, since the server refuses root) and stops
//! when it exits. Each test gets a database of its own.
//!
//! Without server binaries the Postgres tests say loudly that they were skipped; with
//! `SPOKEHUB_REQUIRE_POSTGRES=1` (CI) they fail instead.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// The server the tests use: an admin URL without a database name, e.g.
/// `postgres://postgres@127.0.0.1:54321`.
struct Server {
    admin: String,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// Whether the throwaway cluster syncs to disk. Tests run it with `fsync = off` (they kill the
/// hub, never the server, so what reaches the disk does not change what they check, and it
/// saves a shared 2-core machine its fsyncs); benchmarks measure the real cost.
static DURABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the throwaway cluster fsync as a production server does (call before the first
/// [`fresh_database`]).
pub fn durable_cluster() {
    DURABLE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Where the throwaway cluster lives, for the stop at exit.
static CLUSTER: OnceLock<Cluster> = OnceLock::new();

struct Cluster {
    root: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    as_postgres: bool,
}

/// A fresh, empty database on the test server (`postgres://.../spokehub_test_<uuid>`), or
/// `None` after saying why Postgres tests are skipped. Panics when Postgres is required.
pub async fn fresh_database() -> Option<String> {
    let server = match SERVER.get_or_init(start_server) {
        Ok(server) => server,
        Err(why) => {
            if std::env::var("SPOKEHUB_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("SPOKEHUB_REQUIRE_POSTGRES=1 but no PostgreSQL server: {why}");
            }
            eprintln!(
                "\n*** SKIPPED: this Postgres test did not run: {why}. Install Debian's \
                 `postgresql` package (initdb, pg_ctl) or set SPOKEHUB_TEST_POSTGRES_URL. ***\n"
            );
            return None;
        }
    };
    let name = format!("spokehub_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", server.admin))
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let _ = conn.close().await;
    Some(format!("{}/{name}", server.admin))
}

fn start_server() -> Result<Server, String> {
    if let Ok(url) = std::env::var("SPOKEHUB_TEST_POSTGRES_URL") {
        let admin = match url::Url::parse(&url) {
            Ok(mut u) => {
                u.set_path("");
                u.to_string().trim_end_matches('/').to_owned()
            }
            Err(e) => return Err(format!("SPOKEHUB_TEST_POSTGRES_URL is not a URL: {e}")),
        };
        return Ok(Server { admin });
    }
    let initdb = find_binary("initdb").ok_or("no `initdb` on PATH or in /usr/lib/postgresql")?;
    let pg_ctl = initdb.with_file_name("pg_ctl");
    if !pg_ctl.exists() {
        return Err(format!("no pg_ctl next to {}", initdb.display()));
    }
    let as_postgres = unsafe { libc::geteuid() } == 0;
    let root = tempfile::Builder::new()
        .prefix("spokehub-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    let data = root.join("data");
    std::fs::create_dir(&data).map_err(|e| format!("data dir: {e}"))?;
    if as_postgres {
        // The server runs as `postgres`: it must reach and own its directories.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let (uid, gid) = postgres_ids().ok_or("running as root but there is no `postgres` user")?;
        for dir in [&root, &data] {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let cluster = Cluster {
        root: root.clone(),
        data: data.clone(),
        pg_ctl: pg_ctl.clone(),
        as_postgres,
    };
    // Before anything starts: whenever this process ends, the cluster is stopped.
    spawn_watchdog(&cluster);
    run(
        &cluster,
        &initdb,
        &[
            "-D",
            path(&data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
    )?;
    // Loopback only, no Unix socket, enough connections for parallel tests.
    let mut options = format!(
        "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' \
         -c max_connections=300"
    );
    if !DURABLE.load(std::sync::atomic::Ordering::Relaxed) {
        options.push_str(" -c fsync=off -c full_page_writes=off");
    }
    let log = root.join("server.log");
    run(
        &cluster,
        &pg_ctl,
        &[
            "-D",
            path(&data),
            "-l",
            path(&log),
            "-o",
            &options,
            "-w",
            "-t",
            "60",
            "start",
        ],
    )
    .map_err(|e| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{e}\n{log}")
    })?;
    let _ = CLUSTER.set(cluster);
    extern "C" fn stop_at_exit() {
        if let Some(c) = CLUSTER.get() {
            let _ = run(
                c,
                &c.pg_ctl,
                &["-D", path(&c.data), "-m", "immediate", "-w", "stop"],
            );
            // The last server processes may still be leaving; try a few times.
            for _ in 0..20 {
                if std::fs::remove_dir_all(&c.root).is_ok() || !c.root.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(stop_at_exit) };
    let admin = format!("postgres://postgres@127.0.0.1:{port}");
    wait_ready(&admin)?;
    Ok(Server { admin })
}

/// A shell that stops the cluster once this process is gone (killed, or aborted), for when the
/// exit handler never runs.
fn spawn_watchdog(c: &Cluster) {
    let me = std::process::id();
    let script = format!(
        "while [ -d /proc/{me} ]; do sleep 1; done; '{}' -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
        c.pg_ctl.display(),
        c.data.display(),
        c.root.display()
    );
    let mut cmd = user_command(c, Path::new("/bin/sh"));
    cmd.args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _ = cmd.spawn();
}

fn wait_ready(admin: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // On a thread of its own: the caller may be inside a test's runtime.
        let url = format!("{admin}/postgres");
        let attempt = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let mut c = sqlx::PgConnection::connect(&url).await?;
                    sqlx::query("SELECT 1").execute(&mut c).await?;
                    c.close().await
                })
                .map_err(std::io::Error::other)
        })
        .join()
        .map_err(|_| "readiness check panicked".to_owned())?;
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("the test server never answered: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn user_command(c: &Cluster, program: &Path) -> Command {
    if c.as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(c: &Cluster, program: &Path, args: &[&str]) -> Result<(), String> {
    let out = user_command(c, program)
        .args(args)
        .current_dir(&c.root)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres")).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// `initdb` on PATH, else the newest in Debian's /usr/lib/postgresql/*/bin.
fn find_binary(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.exists())
    });
    let found = on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin").join(name)))
            .filter(|f| f.exists())
            .collect();
        versions.sort();
        versions.pop()
    })?;
    // /usr/local/bin/initdb is a symlink into the versioned directory, where pg_ctl lives.
    Some(std::fs::canonicalize(&found).unwrap_or(found))
}
