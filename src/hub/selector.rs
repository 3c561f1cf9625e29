//! The target selector language: which repositories of an installation a run targets.
//!
//! Terms are separated by whitespace: `repo:NAME` (`name` or `owner/name`), `topic:T`,
//! `name:GLOB` (`*` any run, `?` one char, case-insensitive, against the name without owner),
//! `prop:KEY=VALUE` (custom property), `visibility:public|private|internal`,
//! `archived:true|false`, `fork:true|false`. A leading `-` excludes; exclusions win. Positive terms
//! of the same kind are OR'ed, different kinds AND'ed; no positive terms selects everything.
//! Archived repositories and forks are targets only when a positive `archived:true` / `fork:true`
//! term asks for them; otherwise a match becomes `Skip("archived")` / `Skip("fork")`.
//!
//! A pull task may target its agents instead of repositories: `agent:NAME` (one item for that
//! agent) or `agent:*` (one for every active agent), with `-agent:NAME` to leave one out. Agent
//! terms cannot be mixed with repository terms.

use std::fmt;

use super::repo::{RepoInfo, Visibility};

/// What a selector says about one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run the task here.
    Target,
    /// It matched, but is not run (e.g. "archived", "fork"); shown in the summary.
    Skip(String),
    /// Not part of this run.
    NotSelected,
}

/// A term the selector language does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector term {term:?}: {message}")]
pub struct SelectorError {
    pub term: String,
    pub message: String,
}

/// One condition on a repository. Values of case-insensitive kinds are stored lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    Repo(String),
    Topic(String),
    Name(String),
    Prop(String, String),
    Visibility(Visibility),
    Archived(bool),
    Fork(bool),
    /// An agent by name, or `*` for every agent.
    Agent(String),
}

impl Cond {
    fn kind(&self) -> usize {
        match self {
            Cond::Repo(_) => 0,
            Cond::Topic(_) => 1,
            Cond::Name(_) => 2,
            Cond::Prop(..) => 3,
            Cond::Visibility(_) => 4,
            Cond::Archived(_) => 5,
            Cond::Fork(_) => 6,
            Cond::Agent(_) => 7,
        }
    }

    fn matches(&self, r: &RepoInfo) -> bool {
        match self {
            Cond::Repo(v) if v.contains('/') => r.name.as_str().eq_ignore_ascii_case(v),
            Cond::Repo(v) => r.name.name().eq_ignore_ascii_case(v),
            Cond::Topic(t) => r.topics.iter().any(|x| x.eq_ignore_ascii_case(t)),
            Cond::Name(g) => glob_match(g, &r.name.name().to_ascii_lowercase()),
            Cond::Prop(k, v) => r.properties.get(k).is_some_and(|x| x == v),
            Cond::Visibility(v) => r.visibility == *v,
            Cond::Archived(b) => r.archived == *b,
            Cond::Fork(b) => r.fork == *b,
            // Agent terms select agents, never repositories.
            Cond::Agent(_) => false,
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Repo(v) => write!(f, "repo:{v}"),
            Cond::Topic(v) => write!(f, "topic:{v}"),
            Cond::Name(v) => write!(f, "name:{v}"),
            Cond::Prop(k, v) => write!(f, "prop:{k}={v}"),
            Cond::Visibility(v) => write!(f, "visibility:{}", v.as_str()),
            Cond::Archived(b) => write!(f, "archived:{b}"),
            Cond::Fork(b) => write!(f, "fork:{b}"),
            Cond::Agent(a) => write!(f, "agent:{a}"),
        }
    }
}

/// A parsed selector; equal selectors select the same repositories and print the same.
/// (De)serializes as its text, so a config file can hold `targets = "topic:go -repo:legacy"`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    /// Sorted by printed form (so grouped by kind), deduplicated.
    include: Vec<Cond>,
    exclude: Vec<Cond>,
}

const MAX_LEN: usize = 8192;

fn valid_name_chars(s: &str, extra: &[char]) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || extra.contains(&c))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_cond(kind: &str, value: &str) -> Result<Cond, String> {
    if value.is_empty() {
        return Err("empty value".into());
    }
    let lower = value.to_ascii_lowercase();
    Ok(match kind.to_ascii_lowercase().as_str() {
        "repo" => {
            let parts: Vec<&str> = lower.split('/').collect();
            let ok = parts.len() <= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && valid_name_chars(p, &[]));
            if !ok {
                return Err("expected a repository name or owner/name".into());
            }
            Cond::Repo(lower)
        }
        "topic" => {
            if !valid_name_chars(&lower, &[]) {
                return Err("invalid topic".into());
            }
            Cond::Topic(lower)
        }
        "name" => {
            if !valid_name_chars(&lower, &['*', '?']) {
                return Err("a name pattern may contain letters, digits, -, _, ., * and ?".into());
            }
            Cond::Name(lower)
        }
        "prop" => {
            let (k, v) = value
                .split_once('=')
                .ok_or_else(|| "expected prop:KEY=VALUE".to_owned())?;
            if k.is_empty() {
                return Err("empty property name".into());
            }
            Cond::Prop(k.to_owned(), v.to_owned())
        }
        "visibility" => Cond::Visibility(match lower.as_str() {
            "public" => Visibility::Public,
            "private" => Visibility::Private,
            "internal" => Visibility::Internal,
            _ => return Err("expected public, private or internal".into()),
        }),
        "archived" => Cond::Archived(parse_bool(value)?),
        "fork" => Cond::Fork(parse_bool(value)?),
        "agent" => {
            if value != "*" && !(value.len() <= 64 && valid_name_chars(value, &[])) {
                return Err("expected an agent's name or *".into());
            }
            Cond::Agent(value.to_owned())
        }
        _ => return Err(
            "unknown kind; expected repo:, topic:, name:, prop:, visibility:, archived:, fork: or agent:"
                .into(),
        ),
    })
}

impl Selector {
    /// Parses a selector; errors name the offending term.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        if s.len() > MAX_LEN {
            return Err(SelectorError {
                term: s.chars().take(40).collect(),
                message: format!("selector longer than {MAX_LEN} bytes"),
            });
        }
        let mut sel = Selector::default();
        for term in s.split_whitespace() {
            let (negated, body) = match term.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, term),
            };
            let cond = body
                .split_once(':')
                .ok_or_else(|| "expected KIND:VALUE".to_owned())
                .and_then(|(k, v)| parse_cond(k, v))
                .map_err(|message| SelectorError {
                    term: term.chars().take(200).collect(),
                    message,
                })?;
            if negated {
                sel.exclude.push(cond);
            } else {
                sel.include.push(cond);
            }
        }
        for v in [&mut sel.include, &mut sel.exclude] {
            // Canonical order: by the printed term, which groups terms of one kind together.
            v.sort_by_cached_key(|c| c.to_string());
            v.dedup();
        }
        let agents = sel
            .include
            .iter()
            .chain(&sel.exclude)
            .filter(|c| matches!(c, Cond::Agent(_)));
        let agents = agents.count();
        let all = sel.include.len() + sel.exclude.len();
        if agents > 0 && agents < all {
            return Err(SelectorError {
                term: s.chars().take(200).collect(),
                message: "agent: terms select agents and cannot be combined with repository terms"
                    .into(),
            });
        }
        if agents > 0 && !sel.include.iter().any(|c| matches!(c, Cond::Agent(_))) {
            return Err(SelectorError {
                term: s.chars().take(200).collect(),
                message:
                    "name the agents to run on (agent:NAME or agent:*) before leaving some out"
                        .into(),
            });
        }
        Ok(sel)
    }

    /// Whether it selects agents (`agent:` terms) rather than repositories.
    pub fn targets_agents(&self) -> bool {
        self.include.iter().any(|c| matches!(c, Cond::Agent(_)))
    }

    /// The agents it selects among `active` ones, by name, and the named ones that are not
    /// active (each with why), in name order.
    pub fn select_agents(&self, active: &[String]) -> (Vec<String>, Vec<(String, String)>) {
        let named = |c: &Cond| match c {
            Cond::Agent(a) => Some(a.clone()),
            _ => None,
        };
        let excluded: Vec<String> = self.exclude.iter().filter_map(named).collect();
        let is_out = |a: &str| excluded.iter().any(|x| x == a || x == "*");
        let mut chosen = std::collections::BTreeSet::new();
        let mut missing = Vec::new();
        for want in self.include.iter().filter_map(named) {
            if want == "*" {
                chosen.extend(active.iter().filter(|a| !is_out(a)).cloned());
            } else if active.contains(&want) {
                if !is_out(&want) {
                    chosen.insert(want);
                }
            } else if !is_out(&want) {
                missing.push((want, "no active agent of that name".to_owned()));
            }
        }
        (chosen.into_iter().collect(), missing)
    }

    /// True if any `prop:` term is present: the caller must then fetch custom properties.
    pub fn needs_properties(&self) -> bool {
        self.include
            .iter()
            .chain(&self.exclude)
            .any(|c| matches!(c, Cond::Prop(..)))
    }

    /// What this selector says about `repo`.
    pub fn evaluate(&self, repo: &RepoInfo) -> Verdict {
        if self.exclude.iter().any(|c| c.matches(repo)) {
            return Verdict::NotSelected;
        }
        // `include` is sorted by kind: each run of one kind must have a match.
        let mut i = 0;
        while i < self.include.len() {
            let kind = self.include[i].kind();
            let mut any = false;
            while i < self.include.len() && self.include[i].kind() == kind {
                any |= self.include[i].matches(repo);
                i += 1;
            }
            if !any {
                return Verdict::NotSelected;
            }
        }
        if repo.archived && !self.include.contains(&Cond::Archived(true)) {
            return Verdict::Skip("archived".into());
        }
        if repo.fork && !self.include.contains(&Cond::Fork(true)) {
            return Verdict::Skip("fork".into());
        }
        Verdict::Target
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl TryFrom<String> for Selector {
    type Error = SelectorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Selector::parse(&s)
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> Self {
        s.to_string()
    }
}

/// Canonical form: included terms sorted, then excluded terms sorted; empty for "everything".
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (neg, c) in self
            .include
            .iter()
            .map(|c| ("", c))
            .chain(self.exclude.iter().map(|c| ("-", c)))
        {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{neg}{c}")?;
        }
        Ok(())
    }
}

/// `*` matches any run (also empty), `?` exactly one character; everything else literally.
/// Greedy matching that backtracks only to the last `*`: O(pattern * text) worst case, no recursion.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
