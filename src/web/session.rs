//! Sessions in an encrypted cookie: what a signed-in person carries between requests (their
//! GitHub tokens and a CSRF token), sealed with XChaCha20-Poly1305 under a key derived from
//! the App's OAuth client secret, so every replica reads every session and nothing needs a
//! table. A cookie that was altered, sealed under another key or is past its age opens to
//! nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The session cookie.
pub const SESSION_COOKIE: &str = "spokehub_session";
/// The cookie that carries a sign-in's `state` from `/auth/login` to `/auth/callback`.
pub const SIGN_IN_COOKIE: &str = "spokehub_sign_in";
/// How long a session lasts without signing in again.
pub const SESSION_MAX_AGE_S: i64 = 7 * 24 * 3600;
/// How long a sign-in may take at GitHub.
pub const SIGN_IN_MAX_AGE_S: i64 = 600;

/// A signed-in person. Never logged (no `Debug`): it holds their tokens.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// Names the session when it is signed out (see `Store::end_session`).
    pub id: String,
    pub login: String,
    pub user_id: u64,
    /// The user-to-server token and when it expires (unix seconds).
    pub access_token: String,
    pub access_expires_at: i64,
    pub refresh_token: Option<String>,
    /// Compared with the `csrf` field of every form the person posts.
    pub csrf: String,
    /// Unix seconds; the session ends [`SESSION_MAX_AGE_S`] later.
    pub created_at: i64,
}

/// A sign-in under way.
#[derive(Serialize, Deserialize)]
pub struct SignIn {
    pub state: String,
    /// Where to go after signing in (a path of this hub).
    pub return_to: String,
    pub created_at: i64,
}

/// Seals and opens cookies.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// `Secure` on cookies (the hub is reached over https).
    secure: bool,
}

impl Sealer {
    /// The key is HMAC-SHA256(client secret, purpose): rotating the secret signs everyone out.
    pub fn new(client_secret: &str, secure: bool) -> Sealer {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(client_secret.as_bytes())
            .expect("any key length");
        mac.update(b"spokehub session cookie v1");
        let key = mac.finalize().into_bytes();
        Sealer {
            cipher: XChaCha20Poly1305::new(&key),
            secure,
        }
    }

    /// `name` is bound into the sealed value, so one cookie cannot stand in for another.
    pub fn seal<T: Serialize>(&self, name: &str, value: &T) -> String {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let plain = serde_json::to_vec(&(name, value)).expect("serializable");
        let sealed = self
            .cipher
            .encrypt(nonce, plain.as_slice())
            .expect("encryption of a small value");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open<T: DeserializeOwned>(&self, name: &str, text: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .ok()?;
        let (n, value): (String, T) = serde_json::from_slice(&plain).ok()?;
        (n == name).then_some(value)
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure behind https.
    pub fn set_cookie(&self, name: &str, value: &str, max_age_s: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}")
    }

    /// A `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self, name: &str) -> String {
        self.set_cookie(name, "", 0)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A random token for `state` and CSRF.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignIn {
        SignIn {
            state: "s".into(),
            return_to: "/runs".into(),
            created_at: 1,
        }
    }

    #[test]
    fn a_sealed_value_opens_under_its_key_and_name_only() {
        let a = Sealer::new("secret-a", false);
        let b = Sealer::new("secret-b", false);
        let sealed = a.seal(SIGN_IN_COOKIE, &sample());
        let opened: SignIn = a.open(SIGN_IN_COOKIE, &sealed).expect("opens");
        assert_eq!(opened.return_to, "/runs");
        assert!(b.open::<SignIn>(SIGN_IN_COOKIE, &sealed).is_none());
        assert!(a.open::<SignIn>(SESSION_COOKIE, &sealed).is_none());
        // Any altered byte breaks it.
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(a
            .open::<SignIn>(SIGN_IN_COOKIE, &URL_SAFE_NO_PAD.encode(bytes))
            .is_none());
        assert!(a.open::<SignIn>(SIGN_IN_COOKIE, "garbage").is_none());
    }

    #[test]
    fn the_sealed_text_does_not_show_what_it_holds() {
        let a = Sealer::new("k", false);
        let sealed = a.seal(SIGN_IN_COOKIE, &sample());
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("/runs"));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_behind_https() {
        let c = Sealer::new("k", true).set_cookie(SESSION_COOKIE, "v", 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        assert!(!Sealer::new("k", false)
            .set_cookie(SESSION_COOKIE, "v", 60)
            .contains("Secure"));
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; spokehub_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
