//! `spokehub demo` as a person runs it: it ends at once when the hub refuses the run, prints the
//! spoke table for any size of run, and draws no progress bar or colours into a pipe.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_spokehub");

fn demo(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("demo")
        .args(args)
        .env_remove("SPOKEHUB_LOG")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (out, started.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A refused run ends the demo long before its timeout, with the refusal's words.
fn assert_refused_at_once(args: &[&str], words: &[&str]) {
    let mut all = vec!["--repos", "3", "--timeout-s", "600"];
    all.extend_from_slice(args);
    let (out, took) = demo(&all);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("the hub did not start the run"), "{line}");
    for w in words {
        assert!(line.contains(w), "{w:?} not in {line}");
    }
    assert!(!err.contains("backtrace"), "{err}");
}

#[test]
fn a_bad_selector_ends_the_demo_at_once_with_the_refusal() {
    assert_refused_at_once(
        &["--targets", "colour:blue"],
        &["invalid inputs", "input `targets`", "\"colour:blue\""],
    );
}

#[test]
fn an_empty_task_ends_the_demo_at_once_with_the_refusal() {
    assert_refused_at_once(&["--task", ""], &["input `task` is required"]);
}

#[test]
fn the_table_is_printed_for_a_large_run_without_bar_or_colours_in_a_pipe() {
    let (out, _) = demo(&["--repos", "40", "--rows", "5", "--json"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("acme/"))
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    assert!(
        rows.iter()
            .all(|r| r.contains("succeeded") && r.contains("attempt 1")),
        "{stdout}"
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let total = last["total"].as_u64().unwrap();
    assert!(total >= 40, "{last}");
    assert!(
        stdout.contains(&format!("… and {} more", total - 5)),
        "{stdout}"
    );
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains('\u{1b}'), "colour codes: {shown:?}");
        assert!(!shown.contains('\r'), "progress bar: {shown:?}");
    }
    assert!(!stderr.contains("done,"), "progress bar: {stderr}");
}

#[test]
fn server_errors_retried_by_policy_print_no_error_lines() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("flaky.toml");
    std::fs::write(
        &scenario,
        "[org]\nrepos = 20\n[spoke]\nduration_ms = [5, 20]\nseed = 3\n[faults]\napi_error_rate = 0.2\n",
    )
    .unwrap();
    let hub = dir.path().join("hub.toml");
    std::fs::write(&hub, "[policy]\nunknown_search_delay = \"200ms\"\n").unwrap();
    let (out, _) = demo(&[
        "--scenario",
        scenario.to_str().unwrap(),
        "--config",
        hub.to_str().unwrap(),
        "--json",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(last["api_requests"].as_u64().unwrap() > 20, "{last}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
