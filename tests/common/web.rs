//! Signing in to the run page over plain HTTP, as a browser does: the hub's sign-in, GitHub's
//! (the emulator's) authorize page, the callback, with cookies carried by hand.
#![allow(dead_code)]

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};

/// A client that does not follow redirects (the tests look at each one).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of cookie `name` set by a response ("" when it clears it).
pub fn set_cookie(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

pub fn location(resp: &Response) -> String {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Signs `login` in (choosing on the emulator's authorize page by its `login` shortcut) and
/// returns the session cookie (`spokehub_session=...`) and where the hub sent them.
pub async fn sign_in(hub_url: &str, login: &str, return_to: &str) -> (String, String) {
    let http = client();
    let start = http
        .get(format!("{hub_url}/auth/login"))
        .query(&[("return_to", return_to)])
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let sign_in = set_cookie(&start, "spokehub_sign_in").expect("a sign-in cookie");
    let authorize = location(&start);
    assert!(
        authorize.contains("/login/oauth/authorize?client_id="),
        "{authorize}"
    );
    let github = http
        .get(format!("{authorize}&login={login}"))
        .send()
        .await
        .unwrap();
    assert_eq!(github.status(), StatusCode::FOUND);
    let callback = location(&github);
    assert!(
        callback.starts_with(&format!("{hub_url}/auth/callback?code=")),
        "{callback}"
    );
    let back = http
        .get(&callback)
        .header(COOKIE, &sign_in)
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        back.text().await
    );
    let session = set_cookie(&back, "spokehub_session").expect("a session cookie");
    (session, location(&back))
}

/// GET with a cookie.
pub async fn get(url: &str, cookie: &str) -> Response {
    client()
        .get(url)
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}
