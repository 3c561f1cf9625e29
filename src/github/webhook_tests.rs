use std::path::PathBuf;

use super::*;

const VECTOR_SECRET: &str = "It's a Secret to Everybody";
const VECTOR_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// The shared fixtures directory: `SPOKEHUB_FIXTURES`, else found next to the crate.
fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SPOKEHUB_FIXTURES") {
        return PathBuf::from(dir);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for rel in ["fixtures", "../shared/fixtures", "../../shared/fixtures"] {
        let p = root.join(rel);
        if p.join("webhooks").is_dir() {
            return p;
        }
    }
    panic!("fixtures not found: set SPOKEHUB_FIXTURES");
}

/// Every `*.json` example for one event, read from the directory (so new examples are covered).
fn examples(event: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir().join("webhooks").join(event);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no examples for {event}");
    out
}

fn raw(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn github_signature_vector_verifies() {
    assert_eq!(
        verify_signature(&[secret(VECTOR_SECRET)], b"Hello, World!", Some(VECTOR_SIG)),
        Ok(())
    );
}

#[test]
fn signature_rotation_accepts_any_configured_secret() {
    let secrets = [secret("new secret"), secret(VECTOR_SECRET)];
    assert_eq!(
        verify_signature(&secrets, b"Hello, World!", Some(VECTOR_SIG)),
        Ok(())
    );
    let only_new = [secret("new secret")];
    assert_eq!(
        verify_signature(&only_new, b"Hello, World!", Some(VECTOR_SIG)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn signature_rejects_bad_inputs() {
    let s = [secret(VECTOR_SECRET)];
    let body = b"Hello, World!";
    assert_eq!(
        verify_signature(&s, body, None),
        Err(SignatureError::Missing)
    );
    let sha1 = VECTOR_SIG.replace("sha256=", "sha1=");
    assert_eq!(
        verify_signature(&s, body, Some(&sha1)),
        Err(SignatureError::Malformed)
    );
    let bad_hex = format!("sha256={}", "z".repeat(64));
    assert_eq!(
        verify_signature(&s, body, Some(&bad_hex)),
        Err(SignatureError::Malformed)
    );
    let short = &VECTOR_SIG[..VECTOR_SIG.len() - 2];
    assert_eq!(
        verify_signature(&s, body, Some(short)),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        verify_signature(&s, b"Hello, World?", Some(VECTOR_SIG)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(&[], body, Some(VECTOR_SIG)),
        Err(SignatureError::NoSecret)
    );
}

#[test]
fn workflow_dispatch_examples_parse() {
    for (name, body) in examples("workflow_dispatch") {
        let v = raw(&body);
        let Some(WebhookEvent::WorkflowDispatch(e)) =
            parse_event("workflow_dispatch", &body).unwrap_or_else(|err| panic!("{name}: {err}"))
        else {
            panic!("{name}: wrong variant");
        };
        assert_eq!(
            e.repository.as_str(),
            v["repository"]["full_name"],
            "{name}"
        );
        assert_eq!(e.workflow, v["workflow"], "{name}");
        assert_eq!(e.git_ref, v["ref"], "{name}");
        assert_eq!(e.sender, v["sender"]["login"], "{name}");
        assert_eq!(
            e.installation_id.map(|i| i.0),
            v["installation"]["id"].as_u64()
        );
        let want = v["inputs"].as_object().cloned().unwrap_or_default();
        assert_eq!(e.inputs, want, "{name}");
    }
}

#[test]
fn workflow_dispatch_null_inputs_become_empty() {
    let (_, body) = examples("workflow_dispatch").remove(0);
    let mut v = raw(&body);
    v["inputs"] = Value::Null;
    v["installation"] = serde_json::json!({"id": 42});
    let body = serde_json::to_vec(&v).unwrap();
    let Some(WebhookEvent::WorkflowDispatch(e)) = parse_event("workflow_dispatch", &body).unwrap()
    else {
        panic!("wrong variant");
    };
    assert!(e.inputs.is_empty());
    assert_eq!(e.installation_id, Some(InstallationId(42)));
}

#[test]
fn repository_dispatch_examples_parse() {
    for (name, body) in examples("repository_dispatch") {
        let v = raw(&body);
        let Some(WebhookEvent::RepositoryDispatch(e)) =
            parse_event("repository_dispatch", &body).unwrap()
        else {
            panic!("{name}: wrong variant");
        };
        assert_eq!(
            e.repository.as_str(),
            v["repository"]["full_name"],
            "{name}"
        );
        assert_eq!(e.action, v["action"], "{name}");
        assert_eq!(e.client_payload, v["client_payload"], "{name}");
        assert_eq!(e.sender, v["sender"]["login"], "{name}");
        assert_eq!(
            e.installation_id.map(|i| i.0),
            v["installation"]["id"].as_u64()
        );
    }
}

#[test]
fn workflow_run_examples_parse() {
    for (name, body) in examples("workflow_run") {
        let v = raw(&body);
        let w = &v["workflow_run"];
        let Some(WebhookEvent::WorkflowRun(e)) = parse_event("workflow_run", &body).unwrap() else {
            panic!("{name}: wrong variant");
        };
        assert_eq!(e.action, v["action"], "{name}");
        assert_eq!(
            e.repository.as_str(),
            v["repository"]["full_name"],
            "{name}"
        );
        assert_eq!(e.run.id, w["id"].as_u64().unwrap(), "{name}");
        assert_eq!(e.run.display_title, w["display_title"], "{name}");
        assert_eq!(e.run.status, w["status"], "{name}");
        assert_eq!(
            e.run.conclusion.as_deref(),
            w["conclusion"].as_str(),
            "{name}"
        );
        assert_eq!(e.run.html_url, w["html_url"], "{name}");
        assert_eq!(
            u64::from(e.run.run_attempt),
            w["run_attempt"].as_u64().unwrap()
        );
        assert_eq!(e.run.path, w["path"], "{name}");
        assert_eq!(e.run.event, w["event"], "{name}");
        assert_eq!(e.run.head_sha, w["head_sha"], "{name}");
        let created = e
            .run
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(created, w["created_at"], "{name}");
        assert_eq!(
            e.installation_id.map(|i| i.0),
            v["installation"]["id"].as_u64()
        );
    }
}

#[test]
fn check_run_examples_parse() {
    let mut saw_identifier = false;
    for (name, body) in examples("check_run") {
        let v = raw(&body);
        let c = &v["check_run"];
        let Some(WebhookEvent::CheckRun(e)) = parse_event("check_run", &body).unwrap() else {
            panic!("{name}: wrong variant");
        };
        assert_eq!(e.action, v["action"], "{name}");
        assert_eq!(
            e.repository.as_str(),
            v["repository"]["full_name"],
            "{name}"
        );
        assert_eq!(e.check_run_id, c["id"].as_u64().unwrap(), "{name}");
        assert_eq!(e.name, c["name"], "{name}");
        assert_eq!(e.head_sha, c["head_sha"], "{name}");
        let ext = c["external_id"].as_str().filter(|s| !s.is_empty());
        assert_eq!(e.external_id.as_deref(), ext, "{name}");
        let ident = v["requested_action"]["identifier"].as_str();
        assert_eq!(e.requested_action.as_deref(), ident, "{name}");
        saw_identifier |= ident.is_some();
        assert_eq!(
            e.installation_id.map(|i| i.0),
            v["installation"]["id"].as_u64()
        );
    }
    assert!(saw_identifier, "no requested_action example was checked");
}

#[test]
fn ignored_events_give_none() {
    for event in ["ping", "push", "installation"] {
        for (name, body) in examples(event) {
            assert!(parse_event(event, &body).unwrap().is_none(), "{name}");
        }
    }
    assert!(parse_event("no_such_event", b"not json").unwrap().is_none());
}

#[test]
fn malformed_bodies_are_errors() {
    for event in [
        "workflow_dispatch",
        "repository_dispatch",
        "workflow_run",
        "check_run",
    ] {
        assert!(parse_event(event, b"{not json").is_err(), "{event}");
        assert!(parse_event(event, b"{}").is_err(), "{event}");
        assert!(parse_event(event, b"[]").is_err(), "{event}");
        // A real example with its repository removed is missing a required field.
        let (_, body) = examples(event).remove(0);
        let mut v = raw(&body);
        v.as_object_mut().unwrap().remove("repository");
        let err = parse_event(event, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("repository"), "{event}: {err}");
    }
    let (_, body) = examples("check_run").remove(0);
    let mut v = raw(&body);
    v["repository"]["full_name"] = Value::from("not a repo name");
    assert!(parse_event("check_run", &serde_json::to_vec(&v).unwrap()).is_err());
}
