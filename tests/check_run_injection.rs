//! Text that users control reaches check runs only as text: Markdown and HTML fed through every
//! hub workflow input, the sender, and every callback field come out with no raw HTML and no
//! live image or link. Check runs are parsed as GitHub parses them (CommonMark with GitHub's
//! extensions: tables, autolinks, strikethrough).

mod common;

use std::time::{Duration, Instant};

use comrak::nodes::NodeValue;
use comrak::{parse_document, Arena, Options};
use serde_json::{json, Value};

use common::{scenario, World, FAST_HUB};

/// An image, links, an autolink, a bare domain, HTML, a table breaker, emphasis and a code span.
const EVIL: &str = "<img src=x onerror=alert(1)> ![i](https://evil.example/y.png) \
     [l](https://evil.example/) <https://evil.example/a> https://evil.example/auto \
     www.evil.example <script>x</script> | **b** _i_ `c` @octocat #1";

/// Everything wrong with one check-run text, parsed as GitHub would.
fn problems(text: &str, allowed_link: &dyn Fn(&str) -> bool) -> Vec<String> {
    let arena = Arena::new();
    let mut options = Options::default();
    options.extension.table = true;
    options.extension.autolink = true;
    options.extension.strikethrough = true;
    let root = parse_document(&arena, text, &options);
    let mut found = Vec::new();
    for node in root.descendants() {
        match &node.data.borrow().value {
            NodeValue::HtmlInline(h) => found.push(format!("raw HTML {h:?}")),
            NodeValue::HtmlBlock(h) => found.push(format!("raw HTML block {:?}", h.literal)),
            NodeValue::Image(l) => found.push(format!("image {:?}", l.url)),
            NodeValue::Link(l) if !allowed_link(&l.url) => found.push(format!("link {:?}", l.url)),
            _ => {}
        }
    }
    found
}

async fn press(world: &World, inputs: Value, sender: &str) {
    let resp = world
        .http
        .post(format!("{}/_emulator/hub/dispatch", world.emulator.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main", "inputs": inputs, "sender": sender}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

async fn wait_for<F, Fut, T>(what: &str, mut ready: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = ready().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_and_html_in_every_input_and_callback_field_stay_text() {
    // Spokes run long and send no callback of their own: the test sends them.
    let world = World::start(
        &scenario(2, "")
            .replace("duration_ms = [5, 40]", "duration_ms = [20000, 20000]")
            .replace("callback = \"repository_dispatch\"", "callback = \"none\""),
        FAST_HUB,
    )
    .await;

    // Every input that a refusal repeats, one at a time, and a sender.
    let invalid = [
        json!({"task": EVIL}),
        json!({"task": "t1", "targets": EVIL}),
        json!({"task": "t2", "params": EVIL}),
        json!({"task": "t3", "params": format!("[{:?}]", EVIL)}),
        json!({"task": "t4", "dry_run": EVIL}),
    ];
    let refusals = invalid.len();
    for inputs in invalid {
        press(&world, inputs, "octocat").await;
    }
    wait_for("a check run for every refused trigger", || async {
        let s = world.state().await;
        (s["check_runs"].as_array().unwrap().len() >= refusals).then_some(())
    })
    .await;

    // A run that starts, with the payload in params and from an odd sender; its spokes report
    // back with the payload in every field.
    let mut completions = world.hub.engine.subscribe_completions();
    press(
        &world,
        json!({"task": "deploy", "params": json!({"note": EVIL}).to_string()}),
        EVIL,
    )
    .await;
    let runs = wait_for("both spoke runs", || async {
        let runs = world.spoke_runs().await;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    for (run, status) in runs.iter().zip(["success", EVIL]) {
        let body = json!({
            "action": "spoke_complete",
            "branch": "main",
            "client_payload": {
                "hub_run_id": run["inputs"]["hub_run_id"], "repo": run["repo"],
                "status": status, "summary": EVIL, "run_id": run["id"],
                "run_attempt": 1, "run_url": "https://evil.example/run",
                "callback_token": run["inputs"]["callback_token"],
                "conclusion": EVIL, "outputs": {"x": EVIL},
            },
            "repository": {"full_name": world.emulator.hub_repo},
            "sender": {"login": "spokehub-spoke[bot]"},
            "installation": {"id": world.emulator.installation_id},
        });
        let guid = format!("evil-{}", run["id"]);
        assert_eq!(
            world
                .send_webhook("repository_dispatch", &guid, &body)
                .await
                .status(),
            202
        );
    }
    let id = common::next_completion(&mut completions).await;
    let report = world.report(&id).await;
    assert_eq!(
        (report.totals.succeeded, report.totals.failed),
        (1, 1),
        "{:?}",
        report.totals
    );
    assert!(
        report.spokes.iter().all(|s| s.summary.is_some()),
        "the spokes' summaries are kept"
    );

    // Only links to the spokes' own runs on GitHub (the emulator) are live.
    let base = world.emulator.base_url.clone();
    let allowed = move |url: &str| {
        url.starts_with(&format!("{base}/acme/")) && url.contains("/actions/runs/")
    };
    let state = world.state().await;
    let checks = state["check_runs"].as_array().unwrap();
    assert!(checks.len() > refusals, "{}", checks.len());
    for check in checks {
        for field in ["title", "summary", "text"] {
            let Some(text) = check["output"][field].as_str() else {
                continue;
            };
            let found = problems(text, &allowed);
            assert!(
                found.is_empty(),
                "check run {:?} {field}: {found:?}\n{text}",
                check["name"]
            );
        }
    }
    // The payload is shown as text, not dropped: in the refusal of the task input, and as the
    // spokes' own summaries in the run's check run.
    let shows = |name: &str| {
        checks.iter().any(|c| {
            c["name"] == name
                && c["output"]["summary"]
                    .as_str()
                    .unwrap()
                    .contains("evil\\.example")
        })
    };
    assert!(
        shows("spokehub (not started)"),
        "the refused task is not shown"
    );
    let run_check = checks
        .iter()
        .find(|c| c["id"].as_u64() == report.run.check_run_id)
        .unwrap();
    assert_eq!(
        run_check["output"]["summary"]
            .as_str()
            .unwrap()
            .matches("evil\\.example\\/y\\.png")
            .count(),
        3,
        "both summaries and the odd status are shown: {}",
        run_check["output"]["summary"]
    );
}

#[test]
fn the_checker_finds_what_it_looks_for() {
    let none = |_: &str| false;
    // The HTML (three tags), the image, and four links (inline, <autolink>, bare URL, www.).
    assert_eq!(
        problems(EVIL, &none).len(),
        8,
        "{:?}",
        problems(EVIL, &none)
    );
    assert!(problems(&spokehub::hub::escape_cell(EVIL, 1000), &none).is_empty());
}
