//! `spokehub app create`: registers the hub's GitHub App through GitHub's App-manifest flow.
//!
//! A local page posts [`app-manifest.json`](../../app-manifest.json) (webhook URL
//! `PUBLIC_URL/webhook`, redirect to this command's own callback, a random `state`) to the
//! organization's new-App page. GitHub redirects back with a code; the command checks `state`,
//! exchanges the code (`POST /app-manifests/{code}/conversions`), writes `spokehub.toml` and the
//! private key (both mode 0600), prints the install link and exits. Secrets are never printed.

mod files;
mod flow;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde_json::Value;
use url::Url;

pub use files::{Written, CONFIG_FILE, KEY_FILE};

/// The manifest template shipped with spokehub.
pub const MANIFEST_TEMPLATE: &str = include_str!("../../app-manifest.json");

/// `spokehub app ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AppCommand {
    /// Create the hub's GitHub App from its manifest and write spokehub.toml and the key.
    Create(AppCreateArgs),
}

/// `spokehub app create`.
#[derive(Debug, Clone, clap::Args)]
pub struct AppCreateArgs {
    /// The organization that will own the App.
    #[arg(long)]
    pub org: String,
    /// Where GitHub and people reach the hub; webhooks go to PUBLIC_URL/webhook.
    #[arg(long)]
    pub public_url: Url,
    /// GitHub's web address: https://github.com, a GitHub Enterprise Server, or the emulator.
    #[arg(long, default_value = "https://github.com")]
    pub github_url: Url,
    /// GitHub's REST API (default: https://api.github.com for github.com, else GITHUB_URL/api/v3;
    /// the emulator serves its API at its root: pass its URL).
    #[arg(long)]
    pub api_url: Option<Url>,
    /// Where this command's local page listens (the manifest's redirect comes back here).
    #[arg(long, default_value = "127.0.0.1:3080")]
    pub listen: SocketAddr,
    /// Directory for spokehub.toml and the private key file.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The hub repository: a name in ORG, or owner/name. Only its hub workflow starts runs.
    #[arg(long, default_value = "spokehub")]
    pub hub_repo: String,
    /// The App's name on GitHub (unique on GitHub, at most 34 characters; default: the
    /// manifest's, "spokehub").
    #[arg(long)]
    pub name: Option<String>,
}

/// GitHub's longest App name.
const MAX_APP_NAME: usize = 34;

/// `--name`: what GitHub accepts as an App name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_APP_NAME || n.chars().any(char::is_control) {
        bail!("--name: {name:?} is not an App name: GitHub wants 1 to {MAX_APP_NAME} characters");
    }
    Ok(())
}

impl AppCreateArgs {
    /// `--hub-repo` as a full name (a bare name is in `--org`).
    pub fn hub_repository(&self) -> anyhow::Result<crate::hub::RepoName> {
        let full = if self.hub_repo.contains('/') {
            self.hub_repo.clone()
        } else {
            format!("{}/{}", self.org, self.hub_repo)
        };
        full.parse().map_err(|_| {
            anyhow::anyhow!("--hub-repo: {:?} is not a repository name", self.hub_repo)
        })
    }
}

/// Runs `spokehub app ...`.
pub async fn run(cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Create(args) => create(args).await,
    }
}

/// The REST API of a GitHub web address: `https://api.github.com` for github.com, else
/// `{github_url}/api/v3` (GitHub Enterprise Server).
pub fn api_url_for(github_url: &Url) -> Url {
    if github_url.host_str() == Some("github.com") {
        return Url::parse("https://api.github.com").expect("valid URL");
    }
    join(github_url, "api/v3")
}

/// `base` + `/` + `path`, whatever `base`'s trailing slash.
fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let p = format!("{}/{path}", base.path().trim_end_matches('/'));
    u.set_path(&p);
    u.set_query(None);
    u
}

/// An organization login: letters, digits and single inner hyphens, at most 39 characters.
fn check_org(org: &str) -> anyhow::Result<()> {
    let ok = !org.is_empty()
        && org.len() <= 39
        && org.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !org.starts_with('-')
        && !org.ends_with('-');
    if !ok {
        bail!("--org: {org:?} is not an organization login");
    }
    Ok(())
}

fn check_http(flag: &str, u: &Url) -> anyhow::Result<()> {
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        bail!("{flag}: {u} is not an http(s) URL");
    }
    Ok(())
}

/// The manifest to post: the template with `{{PUBLIC_URL}}` (no trailing slash) and
/// `{{REDIRECT_URL}}` replaced inside its string values, and `name` when one is given.
pub fn render_manifest(
    public_url: &Url,
    redirect_url: &Url,
    name: Option<&str>,
) -> anyhow::Result<Value> {
    let mut v: Value =
        serde_json::from_str(MANIFEST_TEMPLATE).context("app-manifest.json is not JSON")?;
    let public = public_url.as_str().trim_end_matches('/').to_owned();
    fn walk(v: &mut Value, public: &str, redirect: &str) {
        match v {
            Value::String(s) => {
                *s = s
                    .replace("{{PUBLIC_URL}}", public)
                    .replace("{{REDIRECT_URL}}", redirect)
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, public, redirect)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, public, redirect)),
            _ => {}
        }
    }
    walk(&mut v, &public, redirect_url.as_str());
    if let (Some(name), Some(obj)) = (name, v.as_object_mut()) {
        obj.insert("name".into(), Value::String(name.trim().to_owned()));
    }
    Ok(v)
}

async fn create(args: AppCreateArgs) -> anyhow::Result<()> {
    check_org(&args.org)?;
    check_http("--public-url", &args.public_url)?;
    check_http("--github-url", &args.github_url)?;
    let api_url = args
        .api_url
        .clone()
        .unwrap_or_else(|| api_url_for(&args.github_url));
    check_http("--api-url", &api_url)?;
    let hub_repo = args.hub_repository()?;
    if let Some(name) = &args.name {
        check_name(name)?;
    }
    files::check_free(&args.out)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let created = flow::run(listener, &args, api_url).await?;
    println!(
        "{}",
        next_steps(&created, &args.org, &hub_repo, &args.public_url)
    );
    Ok(())
}

/// What the command prints once the App exists: where the secrets are and what to do next,
/// pointing at the README's sections.
fn next_steps(
    created: &flow::Created,
    org: &str,
    hub_repo: &crate::hub::RepoName,
    public_url: &Url,
) -> String {
    let dir = created
        .written
        .config
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".into());
    format!(
        "\nCreated the GitHub App {:?} (id {}).\n\
         Wrote {} and {} (mode 0600; they hold the App's secrets).\n\n\
         Next steps (README.md, \"Set up on GitHub\"):\n  \
         1. Install the App on {org}: {} (step 2).\n  \
         2. Add workflows-templates/hub.yml to {hub_repo} and a spoke workflow to every target \
         repository (steps 3 to 5).\n  \
         3. Run the hub where {public_url} reaches it: cd {dir} && spokehub serve (step 6).",
        created.name,
        created.app_id,
        created.written.config.display(),
        created.written.key.display(),
        created.install_url,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        let u = |s: &str| api_url_for(&Url::parse(s).unwrap()).to_string();
        assert_eq!(u("https://github.com"), "https://api.github.com/");
        assert_eq!(u("https://github.com/"), "https://api.github.com/");
        assert_eq!(u("https://ghes.example/"), "https://ghes.example/api/v3");
        assert_eq!(u("https://ghes.example"), "https://ghes.example/api/v3");
    }

    #[test]
    fn manifest_gets_the_urls() {
        let m = render_manifest(
            &Url::parse("https://hub.example/").unwrap(),
            &Url::parse("http://127.0.0.1:3080/callback").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(m["url"], "https://hub.example");
        assert_eq!(m["hook_attributes"]["url"], "https://hub.example/webhook");
        assert_eq!(m["redirect_url"], "http://127.0.0.1:3080/callback");
        assert!(!m.to_string().contains("{{"), "{m}");
        assert_eq!(m["name"], "spokehub");
    }

    #[test]
    fn name_reaches_the_manifest_and_is_checked() {
        let m = render_manifest(
            &Url::parse("https://hub.example/").unwrap(),
            &Url::parse("http://127.0.0.1:3080/callback").unwrap(),
            Some("acme fan-out"),
        )
        .unwrap();
        assert_eq!(m["name"], "acme fan-out");
        assert!(check_name("acme fan-out").is_ok());
        for bad in ["", "  ", &"x".repeat(35), "a\nb"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("--name"), "{e}");
        }
    }

    #[test]
    fn next_steps_point_at_readme_sections_that_exist() {
        let readme = include_str!("../../README.md");
        let created = flow::Created {
            app_id: 7,
            name: "spokehub".into(),
            install_url: "https://github.com/apps/spokehub/installations/new".into(),
            written: Written {
                config: "/srv/hub/spokehub.toml".into(),
                key: "/srv/hub/spokehub-app.private-key.pem".into(),
            },
        };
        let text = next_steps(
            &created,
            "acme",
            &"acme/hub".parse().unwrap(),
            &Url::parse("https://hub.example").unwrap(),
        );
        assert!(!text.contains("README-install"), "{text}");
        assert!(text.contains("README.md, \"Set up on GitHub\""), "{text}");
        assert!(readme.contains("\n## Set up on GitHub\n"));
        for step in [
            "### 2. Install the App",
            "### 3. Add the hub workflow",
            "### 5. ",
            "### 6. Run the hub",
        ] {
            assert!(readme.contains(step), "README lost {step:?}");
        }
        assert!(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("workflows-templates/hub.yml")
            .exists());
        assert!(text.contains("cd /srv/hub && spokehub serve"), "{text}");
    }

    #[test]
    fn orgs_are_checked() {
        assert!(check_org("acme-corp").is_ok());
        for bad in ["", "-acme", "acme/x", "a b", "acme?state=1"] {
            assert!(check_org(bad).is_err(), "{bad}");
        }
    }
}
