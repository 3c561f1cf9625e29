//! Actions OIDC: the emulator issues ID tokens to simulated jobs as GitHub does, and the hub's
//! verifier accepts genuine, current tokens for its audience from the worker workflow of the
//! hub repository, and refuses every forgery: another key, another audience, expired,
//! `alg: none`, HS256 with the public key, another repository, workflow or run.

mod emulator_support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use emulator_support::{scenario, start, Env};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use spokehub::work::oidc::{issuer_for, OidcError, OidcVerifier, WorkerRefused, WorkerRule};

const AUD: &str = "https://hub.example";
const WORKERS: &str = ".github/workflows/spokehub-workers.yml";

/// A simulated job's ID token for `aud`.
async fn id_token(env: &Env, job: Value, aud: &str) -> String {
    let grant: Value = env
        .http
        .post(env.url("/_emulator/oidc/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = grant["ACTIONS_ID_TOKEN_REQUEST_URL"].as_str().unwrap();
    let bearer = grant["ACTIONS_ID_TOKEN_REQUEST_TOKEN"].as_str().unwrap();
    let v: Value = env
        .http
        .get(format!("{url}&audience={aud}"))
        .header("authorization", format!("bearer {bearer}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["value"].as_str().unwrap().to_owned()
}

fn worker_job(run_id: u64) -> Value {
    json!({"repository": "acme/platform-hub", "workflow_path": WORKERS, "run_id": run_id})
}

fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

fn rule() -> WorkerRule {
    WorkerRule {
        hub_repo: "acme/platform-hub".into(),
        workflow_path: WORKERS.into(),
        default_branch: "main".into(),
    }
}

#[tokio::test]
async fn a_genuine_token_verifies_and_names_its_workflow_run() {
    let env = start(scenario("")).await;
    let issuer = issuer_for(&env.emu.base_url.parse().unwrap());
    let verifier = OidcVerifier::new(&issuer, AUD);
    let token = id_token(&env, worker_job(41), AUD).await;
    let header = part(&token, 0);
    assert_eq!(header["alg"], "RS256");
    let c = verifier
        .verify(&token)
        .await
        .expect("a genuine token verifies");
    assert_eq!(c.repository, "acme/platform-hub");
    assert_eq!(c.run_id, "41");
    assert_eq!(
        c.job_workflow_ref,
        format!("acme/platform-hub/{WORKERS}@refs/heads/main")
    );
    assert_eq!(c.sub, "repo:acme/platform-hub:ref:refs/heads/main");
    assert_eq!(rule().check(&c, &[41]), Ok(()));
    // The job's request token is its own: a guessed one gets nothing.
    let refused = env
        .http
        .get(env.url("/_services/token/id-token?audience=x"))
        .header("authorization", "bearer guessed")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_refused() {
    let env = start(scenario("")).await;
    let issuer = issuer_for(&env.emu.base_url.parse().unwrap());
    let verifier = OidcVerifier::new(&issuer, AUD);
    let genuine = id_token(&env, worker_job(41), AUD).await;
    let header = part(&genuine, 0);
    let mut claims = part(&genuine, 1);

    // Signed by another key, under the issuer's kid and under a kid of its own.
    let other = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = other.to_pkcs8_pem(LineEnding::LF).unwrap();
    let other_key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = header["kid"].as_str().map(str::to_owned);
    let forged = jsonwebtoken::encode(&h, &claims, &other_key).unwrap();
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err(),
        OidcError::BadSignature
    );
    h.kid = Some("mine".into());
    let forged = jsonwebtoken::encode(&h, &claims, &other_key).unwrap();
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err(),
        OidcError::UnknownKey
    );

    // alg: none, and HS256 keyed with the issuer's public key (algorithm confusion).
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert!(matches!(
        verifier.verify(&none).await.unwrap_err(),
        OidcError::Algorithm(a) if a == "none"
    ));
    let jwks: Value = env
        .http
        .get(env.url("/_services/token/.well-known/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = header["kid"].as_str().map(str::to_owned);
    let confused = jsonwebtoken::encode(
        &hs,
        &claims,
        &EncodingKey::from_secret(jwks["keys"][0]["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&confused).await.unwrap_err(),
        OidcError::Algorithm(_)
    ));

    // A genuine token for another audience, or expired.
    let elsewhere = id_token(&env, worker_job(41), "https://other-hub.example").await;
    assert_eq!(
        verifier.verify(&elsewhere).await.unwrap_err(),
        OidcError::Audience
    );
    let mut job = worker_job(41);
    job["token_ttl_s"] = json!(-120);
    let expired = id_token(&env, job, AUD).await;
    assert_eq!(
        verifier.verify(&expired).await.unwrap_err(),
        OidcError::Expired
    );

    // A changed claim breaks the issuer's signature.
    claims["repository"] = json!("acme/svc-0001");
    let tampered = format!(
        "{}.{}.{}",
        genuine.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        genuine.split('.').nth(2).unwrap()
    );
    assert_eq!(
        verifier.verify(&tampered).await.unwrap_err(),
        OidcError::BadSignature
    );
    assert_eq!(
        verifier.verify("not a token").await.unwrap_err(),
        OidcError::Malformed
    );
}

#[tokio::test]
async fn genuine_tokens_of_other_workflows_repositories_and_runs_may_not_claim() {
    let env = start(scenario("")).await;
    let issuer = issuer_for(&env.emu.base_url.parse().unwrap());
    let verifier = OidcVerifier::new(&issuer, AUD);
    let cases = [
        (
            json!({"repository": "acme/svc-0001", "workflow_path": WORKERS, "run_id": 41}),
            "repository",
        ),
        (
            json!({"repository": "acme/platform-hub", "workflow_path": ".github/workflows/other.yml", "run_id": 41}),
            "workflow",
        ),
        (
            json!({"repository": "acme/platform-hub", "workflow_path": WORKERS, "run_id": 41, "git_ref": "refs/heads/feature"}),
            "workflow",
        ),
        // A genuine worker of another hub run.
        (worker_job(99), "run"),
    ];
    for (job, why) in cases {
        let token = id_token(&env, job, AUD).await;
        let c = verifier.verify(&token).await.expect("genuine");
        let refused = rule().check(&c, &[41]).unwrap_err();
        let matched = matches!(
            (&refused, why),
            (WorkerRefused::Repository(_), "repository")
                | (WorkerRefused::Workflow(_), "workflow")
                | (WorkerRefused::Run(_), "run")
        );
        assert!(matched, "{why}: {refused}");
    }
}
