//! `spokehub serve` checks the App's credentials with GitHub before it serves: a wrong App id, a
//! wrong key or a wrong API URL stops it at start, with words that say what to check.

mod common;

use secrecy::SecretString;
use tokio::net::TcpListener;

use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};

const OTHER_KEY: &str = include_str!("data/test-app-key.pem");

async fn emulator() -> EmulatorHandle {
    let sc = Scenario::from_toml(&common::scenario(2, "")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(listener, sc, "http://127.0.0.1:9/webhook".into(), None)
        .await
        .unwrap()
}

/// Starts a hub with `change` applied to a configuration that would work; returns the error.
async fn start_error(
    emu: &EmulatorHandle,
    change: impl FnOnce(&mut spokehub::config::Config),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::hub_config(emu, &dir, common::FAST_HUB, None);
    change(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = match spokehub::server::start(config, listener).await {
        Ok(_) => panic!("the hub started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        !dir.path().join("hub.db").exists(),
        "a database was created before the check"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    err
}

#[tokio::test]
async fn the_right_credentials_start_the_hub() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::hub_config(&emu, &dir, common::FAST_HUB, None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = spokehub::server::start(config, listener).await.unwrap();
    let state: serde_json::Value =
        reqwest::get(format!("{}/_emulator/state?summary=1", emu.base_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(state["requests_by_route"]["GET /app"], 1, "{state}");
    hub.abort();
    emu.shutdown().await;
}

#[tokio::test]
async fn a_wrong_app_id_stops_the_hub_at_start() {
    let emu = emulator().await;
    let err = start_error(&emu, |c| c.app_id += 1).await;
    assert!(
        err.contains("GitHub refused the App's credentials (401")
            && err.contains("SPOKEHUB_APP_ID"),
        "{err}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_stops_the_hub_at_start() {
    let emu = emulator().await;
    let err = start_error(&emu, |c| {
        c.private_key = SecretString::from(OTHER_KEY.to_owned())
    })
    .await;
    assert!(
        err.contains("GitHub refused the App's credentials (401") && err.contains("private key"),
        "{err}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_api_url_stops_the_hub_at_start() {
    let emu = emulator().await;
    // A port that was just free: nothing answers there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let err = start_error(&emu, |c| c.api_url = url.parse().unwrap()).await;
    assert!(
        err.contains(&format!("cannot reach GitHub at {url}"))
            && err.contains("SPOKEHUB_GITHUB_API_URL"),
        "{err}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn an_api_url_that_is_not_github_stops_the_hub_at_start() {
    let emu = emulator().await;
    // A web server, but not GitHub's API (as https://github.com is not).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let site = axum::Router::new()
        .fallback(|| async { (http::StatusCode::NOT_FOUND, "<html>Not here</html>") });
    let server = tokio::spawn(async move { axum::serve(listener, site).await });
    let err = start_error(&emu, |c| c.api_url = url.parse().unwrap()).await;
    assert!(
        err.contains(&format!("{url} does not answer like GitHub's REST API"))
            && err.contains("404")
            && err.contains("SPOKEHUB_GITHUB_API_URL"),
        "{err}"
    );
    server.abort();
    emu.shutdown().await;
}
