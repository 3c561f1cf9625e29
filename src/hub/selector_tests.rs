use std::collections::BTreeMap;

use super::*;

fn repo(full: &str) -> RepoInfo {
    RepoInfo {
        name: full.parse().unwrap(),
        default_branch: "main".into(),
        archived: false,
        fork: false,
        visibility: Visibility::Private,
        topics: vec![],
        properties: BTreeMap::new(),
    }
}

fn with_topics(full: &str, topics: &[&str]) -> RepoInfo {
    RepoInfo {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        ..repo(full)
    }
}

/// A small organization covering every attribute the language looks at.
fn org() -> Vec<RepoInfo> {
    let mut v = vec![
        with_topics("acme/svc-api", &["go", "backend"]),
        with_topics("acme/svc-web", &["frontend"]),
        with_topics("acme/Svc-Billing", &["backend", "Payments"]),
        with_topics("acme/docs", &[]),
    ];
    let mut public = with_topics("acme/sdk", &["go"]);
    public.visibility = Visibility::Public;
    v.push(public);
    let mut internal = repo("acme/tools");
    internal.visibility = Visibility::Internal;
    internal.properties.insert("team".into(), "platform".into());
    v.push(internal);
    let mut old = with_topics("acme/svc-legacy", &["backend"]);
    old.archived = true;
    v.push(old);
    let mut fork = with_topics("acme/svc-fork", &["backend"]);
    fork.fork = true;
    v.push(fork);
    v[0].properties.insert("team".into(), "core".into());
    v
}

/// The names of the targets, and the skipped with reasons, for a selector over `org()`.
fn run(sel: &str) -> (Vec<String>, Vec<String>) {
    let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
    let mut targets = vec![];
    let mut skipped = vec![];
    for r in org() {
        match s.evaluate(&r) {
            Verdict::Target => targets.push(r.name.name().to_owned()),
            Verdict::Skip(why) => skipped.push(format!("{}:{why}", r.name.name())),
            Verdict::NotSelected => {}
        }
    }
    (targets, skipped)
}

#[test]
fn evaluates_a_table_of_selectors() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "",
            &["svc-api", "svc-web", "Svc-Billing", "docs", "sdk", "tools"],
            &["svc-legacy:archived", "svc-fork:fork"],
        ),
        ("repo:docs", &["docs"], &[]),
        ("repo:ACME/DOCS", &["docs"], &[]),
        ("repo:other/docs", &[], &[]),
        ("repo:docs repo:sdk", &["docs", "sdk"], &[]),
        ("repo:svc-legacy", &[], &["svc-legacy:archived"]),
        ("repo:svc-legacy archived:true", &["svc-legacy"], &[]),
        (
            "topic:backend",
            &["svc-api", "Svc-Billing"],
            &["svc-legacy:archived", "svc-fork:fork"],
        ),
        ("topic:payments", &["Svc-Billing"], &[]),
        (
            "topic:go topic:frontend",
            &["svc-api", "svc-web", "sdk"],
            &[],
        ),
        ("topic:go visibility:public", &["sdk"], &[]),
        (
            "topic:go topic:backend visibility:private",
            &["svc-api", "Svc-Billing"],
            &["svc-legacy:archived", "svc-fork:fork"],
        ),
        (
            "name:svc-*",
            &["svc-api", "svc-web", "Svc-Billing"],
            &["svc-legacy:archived", "svc-fork:fork"],
        ),
        ("name:SVC-???", &["svc-api", "svc-web"], &[]),
        ("name:*o*s", &["docs", "tools"], &[]),
        ("name:svc-* -topic:backend", &["svc-web"], &[]),
        (
            "name:svc-* -name:*-web -repo:svc-fork",
            &["svc-api", "Svc-Billing"],
            &["svc-legacy:archived"],
        ),
        ("prop:team=platform", &["tools"], &[]),
        (
            "prop:team=core prop:team=platform",
            &["svc-api", "tools"],
            &[],
        ),
        ("prop:team=Platform", &[], &[]),
        ("visibility:internal", &["tools"], &[]),
        ("archived:true", &["svc-legacy"], &[]),
        ("fork:true", &["svc-fork"], &[]),
        (
            "topic:backend archived:true archived:false",
            &["svc-api", "Svc-Billing", "svc-legacy"],
            &["svc-fork:fork"],
        ),
        ("topic:backend fork:true archived:true", &[], &[]),
        (
            "-archived:true -fork:true",
            &["svc-api", "svc-web", "Svc-Billing", "docs", "sdk", "tools"],
            &[],
        ),
        // Exclusions win, even over explicit names.
        ("repo:docs -repo:docs", &[], &[]),
        ("archived:true -name:svc-*", &[], &[]),
    ];
    for (sel, targets, skipped) in cases {
        let (t, s) = run(sel);
        assert_eq!(t, *targets, "targets of {sel:?}");
        assert_eq!(s, *skipped, "skipped of {sel:?}");
    }
}

#[test]
fn rejects_bad_terms_naming_them() {
    for (sel, term, msg) in [
        ("topic:go color:red", "color:red", "unknown kind"),
        ("topic:", "topic:", "empty value"),
        (
            "visibility:secret",
            "visibility:secret",
            "public, private or internal",
        ),
        ("archived:yes", "archived:yes", "true or false"),
        ("gopher", "gopher", "KIND:VALUE"),
        ("-", "-", "KIND:VALUE"),
        ("prop:team", "prop:team", "KEY=VALUE"),
        ("prop:=x", "prop:=x", "empty property name"),
        ("repo:a/b/c", "repo:a/b/c", "owner/name"),
        ("repo:/x", "repo:/x", "owner/name"),
        ("name:svc[0]", "name:svc[0]", "name pattern"),
    ] {
        let e = Selector::parse(sel).unwrap_err();
        assert_eq!(e.term, term, "{sel}");
        assert!(e.message.contains(msg), "{sel}: {}", e.message);
        assert!(e.to_string().contains(term), "{e}");
    }
    assert!(Selector::parse(&"topic:x ".repeat(2000)).is_err());
}

#[test]
fn display_is_canonical_and_round_trips() {
    let s =
        Selector::parse("  topic:B  -repo:X repo:a topic:a topic:b\tVisibility:Public ").unwrap();
    assert_eq!(
        s.to_string(),
        "repo:a topic:a topic:b visibility:public -repo:x"
    );
    assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    assert_eq!(
        Selector::parse("topic:a repo:a").unwrap(),
        Selector::parse("repo:a topic:a").unwrap()
    );
    assert_eq!(Selector::parse("").unwrap().to_string(), "");
    let p = Selector::parse("prop:Team=Core -archived:true").unwrap();
    assert_eq!(p.to_string(), "prop:Team=Core -archived:true");
}

#[test]
fn deserializes_from_config_text() {
    #[derive(Debug, serde::Deserialize)]
    struct Task {
        targets: Selector,
    }
    let t: Task = toml::from_str("targets = \"topic:go -repo:sdk\"").unwrap();
    assert_eq!(t.targets.to_string(), "topic:go -repo:sdk");
    let e = toml::from_str::<Task>("targets = \"colour:red\"").unwrap_err();
    assert!(e.to_string().contains("colour:red"), "{e}");
    assert_eq!(
        serde_json::to_value(&t.targets).unwrap(),
        "topic:go -repo:sdk"
    );
}

#[test]
fn needs_properties_only_with_prop_terms() {
    assert!(!Selector::parse("topic:a name:x* -repo:b")
        .unwrap()
        .needs_properties());
    assert!(Selector::parse("prop:k=v").unwrap().needs_properties());
    assert!(Selector::parse("-prop:k=v").unwrap().needs_properties());
}

#[test]
fn glob_matches() {
    for (p, t, want) in [
        ("*", "", true),
        ("*", "abc", true),
        ("a*c", "abbbc", true),
        ("a*c", "abcd", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("*-api", "svc-api", true),
        ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ("", "", true),
        ("", "a", false),
        ("abc", "abc", true),
        ("ab", "abc", false),
    ] {
        assert_eq!(glob_match(p, t), want, "{p} vs {t}");
    }
}

#[test]
fn agent_terms_select_agents_not_repositories() {
    let active: Vec<String> = ["eu-1", "eu-2", "us-1"].map(String::from).to_vec();
    let all = Selector::parse("agent:*").unwrap();
    assert!(all.targets_agents());
    assert_eq!(all.select_agents(&active).0, active);
    let some = Selector::parse("agent:* -agent:eu-2").unwrap();
    assert_eq!(some.select_agents(&active).0, vec!["eu-1", "us-1"]);
    let named = Selector::parse("agent:us-1 agent:gone").unwrap();
    let (chosen, missing) = named.select_agents(&active);
    assert_eq!(chosen, vec!["us-1"]);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].0, "gone");
    assert_eq!(named.to_string(), "agent:gone agent:us-1");
    assert!(!Selector::parse("topic:go").unwrap().targets_agents());
    for bad in ["agent:* topic:go", "-agent:eu-1", "agent:a/b", "agent:"] {
        assert!(Selector::parse(bad).is_err(), "{bad}");
    }
}
