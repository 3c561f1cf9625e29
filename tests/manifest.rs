//! The files users install: `app-manifest.json` and the two workflow templates.
//!
//! The manifest must subscribe to every event the hub handles and grant a permission for every
//! API the hub calls, and nothing more. The templates must match the hub's contract (input names,
//! the spoke's `run-name`, the file names the hub dispatches).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest() -> Value {
    let path = root().join("app-manifest.json");
    let text = std::fs::read_to_string(&path).expect("app-manifest.json is readable");
    serde_json::from_str(&text).expect("app-manifest.json is valid JSON")
}

fn template(name: &str) -> String {
    std::fs::read_to_string(root().join("workflows-templates").join(name))
        .unwrap_or_else(|e| panic!("workflows-templates/{name}: {e}"))
}

/// The shared fixtures directory: `SPOKEHUB_FIXTURES`, else found next to the crate.
fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SPOKEHUB_FIXTURES") {
        return PathBuf::from(dir);
    }
    for rel in ["fixtures", "../shared/fixtures", "../../shared/fixtures"] {
        let dir = root().join(rel);
        if dir.join("github-openapi-subset.json").is_file() {
            return dir;
        }
    }
    panic!("fixtures not found: set SPOKEHUB_FIXTURES");
}

fn permissions(m: &Value) -> BTreeMap<String, String> {
    m["default_permissions"]
        .as_object()
        .expect("default_permissions is an object")
        .iter()
        .map(|(k, v)| {
            let level = v.as_str().expect("permission levels are strings");
            (k.clone(), level.to_string())
        })
        .collect()
}

/// Every event the hub acts on (see design.md, "The loop"). `check_run` is not listed: GitHub
/// sends `check_run` `rerequested`/`requested_action` to the App that created the check run.
const HUB_EVENTS: &[&str] = &["workflow_dispatch", "repository_dispatch", "workflow_run"];

/// Every API the hub calls, with the permission it needs (GitHub's REST reference).
const HUB_APIS: &[(&str, &str, &str)] = &[
    (
        "POST /repos/{o}/{r}/actions/workflows/{f}/dispatches",
        "actions",
        "write",
    ),
    ("GET /repos/{o}/{r}/actions/runs/{id}", "actions", "read"),
    (
        "GET /repos/{o}/{r}/actions/workflows/{f}/runs",
        "actions",
        "read",
    ),
    (
        "POST /repos/{o}/{r}/actions/runs/{id}/cancel",
        "actions",
        "write",
    ),
    ("POST /repos/{o}/{r}/check-runs", "checks", "write"),
    ("PATCH /repos/{o}/{r}/check-runs/{id}", "checks", "write"),
    ("GET /repos/{o}/{r}/commits/{ref}", "contents", "read"),
    ("GET /installation/repositories", "metadata", "read"),
    (
        "GET /orgs/{org}/properties/values",
        "organization_custom_properties",
        "read",
    ),
];

fn level_rank(level: &str) -> u8 {
    match level {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        other => panic!("unknown permission level {other:?}"),
    }
}

#[test]
fn manifest_has_the_keys_of_githubs_manifest_flow() {
    let m = manifest();
    for key in [
        "name",
        "url",
        "hook_attributes",
        "redirect_url",
        "public",
        "default_permissions",
        "default_events",
    ] {
        assert!(m.get(key).is_some(), "app-manifest.json lacks {key:?}");
    }
    assert_eq!(m["public"], Value::Bool(false), "the App must be private");
    assert_eq!(m["hook_attributes"]["active"], Value::Bool(true));
    let name = m["name"].as_str().expect("name is a string");
    assert!(
        !name.is_empty() && name.len() <= 34,
        "GitHub App names are 1-34 characters"
    );
}

#[test]
fn manifest_urls_are_placeholders_that_app_create_fills() {
    let m = manifest();
    assert_eq!(m["url"], "{{PUBLIC_URL}}");
    assert_eq!(m["hook_attributes"]["url"], "{{PUBLIC_URL}}/webhook");
    assert_eq!(m["redirect_url"], "{{REDIRECT_URL}}");
}

#[test]
fn manifest_subscribes_to_every_event_the_hub_handles_and_no_other() {
    let m = manifest();
    let mut events: Vec<&str> = m["default_events"]
        .as_array()
        .expect("default_events is an array")
        .iter()
        .map(|e| e.as_str().expect("event names are strings"))
        .collect();
    events.sort_unstable();
    let mut want = HUB_EVENTS.to_vec();
    want.sort_unstable();
    assert_eq!(events, want);
}

#[test]
fn manifest_permissions_cover_every_api_the_hub_calls() {
    let perms = permissions(&manifest());
    for (api, perm, need) in HUB_APIS {
        let have = perms
            .get(*perm)
            .unwrap_or_else(|| panic!("{api} needs {perm}:{need}, the manifest lacks {perm}"));
        assert!(
            level_rank(have) >= level_rank(need),
            "{api} needs {perm}:{need}, the manifest grants {perm}:{have}"
        );
    }
    // The events need: workflow_dispatch and repository_dispatch Contents read,
    // workflow_run Actions read.
    assert!(perms.contains_key("contents") && perms.contains_key("actions"));
}

#[test]
fn manifest_grants_exactly_the_least_permissions() {
    let perms = permissions(&manifest());
    let want: BTreeMap<String, String> = [
        ("actions", "write"),
        ("checks", "write"),
        ("contents", "read"),
        ("metadata", "read"),
        ("organization_custom_properties", "read"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        perms, want,
        "a new permission must be justified in README.md (Security model, \"What the App can do\")"
    );
    // Every granted permission is used by some API or event above: no leftovers.
    for perm in perms.keys() {
        assert!(
            HUB_APIS.iter().any(|(_, p, _)| p == perm),
            "{perm} is granted but no hub API needs it"
        );
    }
}

#[test]
fn manifest_permissions_are_real_github_app_permissions() {
    let spec_path = fixtures_dir().join("github-openapi-subset.json");
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).expect("openapi subset"))
            .expect("openapi subset is JSON");
    let known = &spec["components"]["schemas"]["app-permissions"]["properties"];
    assert!(known.is_object(), "app-permissions schema present");
    for (perm, level) in permissions(&manifest()) {
        let levels = known[&perm]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{perm} is not a GitHub App permission"));
        assert!(
            levels.iter().any(|l| l == &Value::String(level.clone())),
            "{perm}:{level} is not a valid level ({levels:?})"
        );
    }
}

#[test]
fn hub_template_has_the_inputs_the_hub_reads() {
    let hub = template("hub.yml");
    assert!(hub.contains("  workflow_dispatch:\n    inputs:\n"));
    for (input, kind) in [
        ("task", "string"),
        ("targets", "string"),
        ("params", "string"),
        ("dry_run", "boolean"),
    ] {
        let block = input_block(&hub, input);
        assert!(block.contains(&format!("type: {kind}")), "{input}: {block}");
    }
    assert!(input_block(&hub, "task").contains("required: true"));
    assert!(input_block(&hub, "params").contains("default: \"{}\""));
    assert!(input_block(&hub, "dry_run").contains("default: false"));
    assert!(
        hub.contains("\npermissions: {}\n"),
        "hub workflow needs no permissions"
    );
}

#[test]
fn spoke_templates_match_the_hub_contract() {
    for name in ["spoke.yml", "spoke-with-callback.yml"] {
        spoke_template_matches_the_hub_contract(name);
    }
    // Only the callback template reports, with a token for the hub repository only; the plain
    // one references no action that a copy without the reporter App could not resolve.
    let callback = template("spoke-with-callback.yml");
    assert!(callback.contains("repositories: ${{ vars.SPOKEHUB_HUB_REPO }}"));
    assert!(callback.contains("continue-on-error: true"));
    let plain = template("spoke.yml");
    assert!(!plain.contains("create-github-app-token"));
    assert!(!plain.contains("OWNER/"));
}

fn spoke_template_matches_the_hub_contract(name: &str) {
    let spoke = template(name);
    assert!(spoke.contains(
        "\nrun-name: spokehub ${{ inputs.task }} [${{ inputs.hub_run_id }}#${{ inputs.attempt }}]\n"
    ));
    for input in ["hub_run_id", "attempt", "task", "params", "callback_token"] {
        input_block(&spoke, input);
    }
    assert!(input_block(&spoke, "hub_run_id").contains("required: true"));
    assert!(input_block(&spoke, "task").contains("required: true"));
    assert!(input_block(&spoke, "attempt").contains("default: \"1\""));
    assert!(input_block(&spoke, "params").contains("default: \"{}\""));
    assert!(input_block(&spoke, "callback_token").contains("default: \"\""));
    assert!(spoke.contains("\npermissions: {}\n"));
    assert!(spoke.contains("./.spokehub/run-task"), "{name}");
    assert!(spoke.contains("GITHUB_STEP_SUMMARY"), "{name}");
}

#[test]
fn templates_never_expand_inputs_inside_run_scripts() {
    for name in [
        "workflows-templates/hub.yml",
        "workflows-templates/spoke.yml",
        "workflows-templates/spoke-with-callback.yml",
        "action/action.yml",
    ] {
        let text = std::fs::read_to_string(root().join(name)).expect(name);
        let mut in_run = false;
        let mut run_indent = 0;
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim_start();
            if in_run && !trimmed.is_empty() && indent <= run_indent {
                in_run = false;
            }
            if trimmed.starts_with("run:") || trimmed.starts_with("- run:") {
                in_run = true;
                run_indent = indent;
                assert!(
                    !trimmed.contains("${{"),
                    "{name}: expression in run: {line}"
                );
                continue;
            }
            if in_run {
                assert!(
                    !trimmed.contains("${{"),
                    "{name}: expression in a script: {line}"
                );
            }
        }
    }
}

/// The lines of `on.workflow_dispatch.inputs.<name>` (panics when the input is missing).
fn input_block(workflow: &str, name: &str) -> String {
    let header = format!("\n      {name}:\n");
    let start = workflow
        .find(&header)
        .unwrap_or_else(|| panic!("input {name} missing"))
        + header.len();
    workflow[start..]
        .lines()
        .take_while(|l| l.starts_with("        "))
        .collect::<Vec<_>>()
        .join("\n")
}
