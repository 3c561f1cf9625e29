//! The `spokehub` binary as a person meets it: what it says when a setting is wrong (naming
//! the setting the person set), with no backtrace, and exit status 1.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_spokehub");
const TEST_KEY: &str = include_str!("data/test-app-key.pem");

/// Runs `spokehub ARGS` in `dir` with only the given environment (and `RUST_BACKTRACE=1`, as
/// many developers have it set).
fn spokehub(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The environment of a `serve` that would start, but for what a test changes.
fn serve_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SPOKEHUB_APP_ID", "7".into()),
        ("SPOKEHUB_PRIVATE_KEY", TEST_KEY.into()),
        ("SPOKEHUB_WEBHOOK_SECRET", "s3cret-value".into()),
        ("SPOKEHUB_HUB_REPOSITORY", "acme/hub".into()),
        // Nothing listens here: a serve that got as far as GitHub fails there.
        ("SPOKEHUB_GITHUB_API_URL", "http://127.0.0.1:9".into()),
        (
            "SPOKEHUB_DATABASE_URL",
            format!("sqlite://{}", dir.join("hub.db").display()),
        ),
    ]
}

/// `serve` with the environment of [`serve_env`], changed by `set` (an empty value removes).
fn serve_with(dir: &Path, args: &[&str], set: &[(&'static str, &str)]) -> Output {
    let mut env = serve_env(dir);
    for (k, v) in set {
        env.retain(|(key, _)| key != k);
        if !v.is_empty() {
            env.push((k, (*v).to_owned()));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    spokehub(dir, &all, &env)
}

/// Fails with exit status 1 and one `error:` message containing every `needle`, no backtrace,
/// no secret.
fn assert_refused(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(!err.contains("backtrace"), "backtrace printed: {err}");
    assert!(
        !err.contains("Caused by"),
        "multi-line anyhow report: {err}"
    );
    assert!(!err.contains("s3cret-value"), "secret printed: {err}");
    assert!(!err.contains("PRIVATE KEY"), "key printed: {err}");
    err
}

#[test]
fn ordinary_errors_have_no_backtrace_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let o = serve_with(dir.path(), &[], &[("SPOKEHUB_WEBHOOK_SECRET", "")]);
    assert_refused(&o, &["SPOKEHUB_WEBHOOK_SECRET"]);
    assert_eq!(
        stderr(&o).lines().count(),
        1,
        "one line of causes: {}",
        stderr(&o)
    );
}

#[test]
fn a_bad_log_filter_names_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let o = serve_with(dir.path(), &[], &[("RUST_LOG", "spokehub=loud")]);
    assert_refused(&o, &["RUST_LOG", "spokehub=loud"]);
    let o = serve_with(
        dir.path(),
        &[],
        &[("SPOKEHUB_LOG", "[bad"), ("RUST_LOG", "info")],
    );
    assert_refused(&o, &["SPOKEHUB_LOG"]);
}

#[test]
fn a_bad_app_id_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let o = serve_with(dir.path(), &[], &[("SPOKEHUB_APP_ID", "abc")]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "a usage error: {err}");
    assert!(
        err.contains("SPOKEHUB_APP_ID") && err.contains("abc") && err.contains("numeric"),
        "{err}"
    );
}

#[test]
fn private_key_errors_name_the_setting_used() {
    let dir = tempfile::tempdir().unwrap();
    let o = serve_with(
        dir.path(),
        &[],
        &[(
            "SPOKEHUB_PRIVATE_KEY",
            "-----BEGIN RSA PRIVATE KEY-----\nnot-a-key\n-----END RSA PRIVATE KEY-----",
        )],
    );
    let err = assert_refused(&o, &["SPOKEHUB_PRIVATE_KEY:"]);
    assert!(!err.contains("SPOKEHUB_PRIVATE_KEY_FILE"), "{err}");
    assert!(!err.contains("not-a-key"), "key material printed: {err}");

    let missing = dir.path().join("missing.pem");
    let o = serve_with(
        dir.path(),
        &[],
        &[
            ("SPOKEHUB_PRIVATE_KEY", ""),
            ("SPOKEHUB_PRIVATE_KEY_FILE", missing.to_str().unwrap()),
        ],
    );
    assert_refused(&o, &["SPOKEHUB_PRIVATE_KEY_FILE", "missing.pem"]);
}

#[test]
fn config_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = serve_with(dir.path(), &["--config", "absent.toml"], &[]);
    assert_refused(&o, &["absent.toml"]);

    let file = dir.path().join("team-hub.toml");
    std::fs::write(&file, "[policy]\nconcurrency = 0\n").unwrap();
    let o = serve_with(dir.path(), &["--config", file.to_str().unwrap()], &[]);
    let err = assert_refused(&o, &["policy in", "team-hub.toml"]);
    assert!(!err.contains("spokehub.toml"), "{err}");

    std::fs::write(&file, "[server]\nlisten = \"everywhere\"\n").unwrap();
    let o = serve_with(
        dir.path(),
        &[],
        &[("SPOKEHUB_CONFIG", file.to_str().unwrap())],
    );
    assert_refused(
        &o,
        &[
            "server.listen in",
            "team-hub.toml",
            "everywhere",
            "HOST:PORT",
        ],
    );
}

#[test]
fn serve_listens_on_a_host_name_and_stops_at_start_when_github_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    // localhost is accepted (bound before GitHub is asked); the API URL is where nothing listens.
    let o = serve_with(dir.path(), &[], &[("SPOKEHUB_LISTEN", "localhost:0")]);
    let err = assert_refused(
        &o,
        &[
            "cannot reach GitHub at http://127.0.0.1:9",
            "SPOKEHUB_GITHUB_API_URL",
        ],
    );
    assert!(!err.contains("SPOKEHUB_LISTEN"), "{err}");
    assert!(!dir.path().join("hub.db").exists(), "database created");
}
