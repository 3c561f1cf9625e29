//! What `spokehub app create` writes: `spokehub.toml` and the App's private key, both created
//! new with mode 0600 (the configuration holds the webhook secret). Existing files are never
//! overwritten.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use url::Url;

use crate::hub::RepoName;

/// The configuration file's name.
pub const CONFIG_FILE: &str = "spokehub.toml";
/// The private key file's name.
pub const KEY_FILE: &str = "spokehub-app.private-key.pem";

/// Paths of the files written (absolute).
#[derive(Debug, Clone)]
pub struct Written {
    pub config: PathBuf,
    pub key: PathBuf,
}

/// The credentials a conversion returned. No `Debug`: it holds secrets.
pub struct Credentials {
    pub app_id: u64,
    pub name: String,
    pub pem: SecretString,
    pub webhook_secret: SecretString,
    /// The App's OAuth client ("Sign in with GitHub" on the run page), when GitHub sent it.
    pub oauth: Option<(String, SecretString)>,
}

/// Fails when `out` already holds either file (checked before the flow starts).
pub fn check_free(out: &Path) -> anyhow::Result<()> {
    for name in [CONFIG_FILE, KEY_FILE] {
        let p = out.join(name);
        if p.exists() {
            bail!(
                "{} already exists: move it away or choose another --out",
                p.display()
            );
        }
    }
    Ok(())
}

/// Creates `path` (must not exist) with mode 0600 and writes `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[derive(Serialize)]
struct FileOut<'a> {
    github: GithubOut<'a>,
    server: ServerOut<'a>,
    hub: HubOut<'a>,
}

#[derive(Serialize)]
struct HubOut<'a> {
    repository: &'a str,
}

#[derive(Serialize)]
struct GithubOut<'a> {
    app_id: u64,
    private_key_file: &'a Path,
    webhook_secret: &'a str,
    api_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    oauth_client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oauth_client_secret: Option<&'a str>,
}

#[derive(Serialize)]
struct ServerOut<'a> {
    public_url: &'a str,
}

/// Writes the key, then `spokehub.toml` pointing at it by absolute path.
pub fn write(
    out: &Path,
    creds: &Credentials,
    api_url: &Url,
    public_url: &Url,
    hub_repo: &RepoName,
) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let dir =
        std::fs::canonicalize(out).with_context(|| format!("cannot resolve {}", out.display()))?;
    let key = dir.join(KEY_FILE);
    let config = dir.join(CONFIG_FILE);
    write_private(&key, creds.pem.expose_secret().as_bytes())?;
    let body = toml::to_string(&FileOut {
        github: GithubOut {
            app_id: creds.app_id,
            private_key_file: &key,
            webhook_secret: creds.webhook_secret.expose_secret(),
            api_url: api_url.as_str().trim_end_matches('/'),
            oauth_client_id: creds.oauth.as_ref().map(|(id, _)| id.as_str()),
            oauth_client_secret: creds.oauth.as_ref().map(|(_, s)| s.expose_secret()),
        },
        server: ServerOut {
            public_url: public_url.as_str().trim_end_matches('/'),
        },
        hub: HubOut {
            repository: hub_repo.as_str(),
        },
    })
    .context("cannot encode spokehub.toml")?;
    let text = format!(
        "# Written by `spokehub app create` for the GitHub App {:?} (id {}).\n# It holds the webhook secret: keep it private (mode 0600).\n\n{body}",
        creds.name, creds.app_id
    );
    if let Err(e) = write_private(&config, text.as_bytes()) {
        let _ = std::fs::remove_file(&key);
        return Err(e);
    }
    Ok(Written { config, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_private_files_the_hub_reads_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials {
            app_id: 42,
            name: "hub \"x\"".into(),
            pem: SecretString::from(
                "-----BEGIN RSA PRIVATE KEY-----\nk\n-----END RSA PRIVATE KEY-----\n",
            ),
            webhook_secret: SecretString::from("s\"e=c\\ret"),
            oauth: Some(("Iv1.abc".into(), SecretString::from("oauth-secret"))),
        };
        let api = Url::parse("https://ghes.example/api/v3").unwrap();
        let public = Url::parse("https://hub.example/").unwrap();
        let hub: RepoName = "acme/spokehub".parse().unwrap();
        check_free(dir.path()).unwrap();
        let w = write(dir.path(), &creds, &api, &public, &hub).unwrap();
        #[cfg(unix)]
        for p in [&w.config, &w.key] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let file = crate::config::read_file_config(&w.config).unwrap();
        assert_eq!(file.github.app_id, Some(42));
        assert_eq!(
            file.github
                .webhook_secret
                .as_ref()
                .map(|s| s.expose_secret()),
            Some("s\"e=c\\ret")
        );
        assert_eq!(
            file.github.api_url.as_deref(),
            Some("https://ghes.example/api/v3")
        );
        assert_eq!(
            file.github.private_key_file.as_deref(),
            Some(w.key.as_path())
        );
        assert_eq!(
            file.server.public_url.as_deref(),
            Some("https://hub.example")
        );
        assert_eq!(file.github.oauth_client_id.as_deref(), Some("Iv1.abc"));
        assert_eq!(
            file.github
                .oauth_client_secret
                .as_ref()
                .map(|s| s.expose_secret()),
            Some("oauth-secret")
        );
        assert!(check_free(dir.path()).is_err());
        assert!(matches!(
            file.hub.repository,
            Some(crate::config::OneOrMany::One(ref r)) if r == "acme/spokehub"
        ));
        assert!(write(dir.path(), &creds, &api, &public, &hub).is_err());
    }
}
