//! The HTML of the run pages, from what the ledger holds: pure functions, every value that a
//! user, a repository or a spoke controls escaped, no inline script or style (the
//! Content-Security-Policy forbids both).

use std::fmt::Write as _;

use crate::hub::{Spoke, SpokeStatus, Totals};
use crate::report::{is_problem, label, rank};
use crate::store::RunRecord;

/// Spokes per page of the table.
pub const PAGE_SIZE: usize = 100;
/// Events shown in the run's event log (the newest).
pub const EVENTS_SHOWN: usize = 200;

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A URL for an `href`: only http(s), else nothing.
fn safe_url(u: &str) -> Option<String> {
    let parsed = url::Url::parse(u).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| esc(parsed.as_str()))
}

/// The signed-in person, as the page shows them.
pub struct Viewer<'a> {
    pub login: &'a str,
    pub csrf: &'a str,
}

/// Which spokes the table shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpokeFilter {
    pub problems_only: bool,
    pub state: Option<SpokeStatus>,
    /// Part of the repository name.
    pub search: String,
    /// From 1.
    pub page: usize,
}

impl SpokeFilter {
    pub fn matches(&self, s: &Spoke) -> bool {
        (!self.problems_only || is_problem(s.status))
            && self.state.is_none_or(|st| st == s.status)
            && (self.search.is_empty()
                || s.repo
                    .as_str()
                    .to_ascii_lowercase()
                    .contains(&self.search.to_ascii_lowercase()))
    }

    /// The query string of this filter at page `page`.
    pub fn query(&self, page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if self.problems_only {
            q.append_pair("problems", "1");
        }
        if let Some(s) = self.state {
            q.append_pair("state", s.as_str());
        }
        if !self.search.is_empty() {
            q.append_pair("q", &self.search);
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        q.finish()
    }
}

/// A page of the table: the spokes the filter keeps, problems first then by name.
pub fn select<'s>(spokes: &'s [Spoke], filter: &SpokeFilter) -> (Vec<&'s Spoke>, usize) {
    let mut kept: Vec<&Spoke> = spokes.iter().filter(|s| filter.matches(s)).collect();
    kept.sort_by(|a, b| {
        rank(a.status)
            .cmp(&rank(b.status))
            .then_with(|| a.repo.as_str().cmp(b.repo.as_str()))
    });
    let total = kept.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let start = (filter.page.clamp(1, pages) - 1) * PAGE_SIZE;
    let page = kept.into_iter().skip(start).take(PAGE_SIZE).collect();
    (page, total)
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{}.{}s", s, (ms.max(0) % 1000) / 100),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The whole document around `body`.
pub fn layout(title: &str, viewer: Option<&Viewer>, body: &str, live: Option<&str>) -> String {
    let who = match viewer {
        Some(v) => format!(
            "<span id=\"who\">Signed in as <strong>{}</strong></span>\
             <form method=\"post\" action=\"/auth/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
            esc(v.login),
            esc(v.csrf)
        ),
        None => String::new(),
    };
    let live = live
        .map(|l| format!(" data-live=\"{}\"", esc(l)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/assets/spokehub.css\">\
         <script src=\"/assets/run.js\" defer></script></head><body{live}>\
         <header><a href=\"/runs\" class=\"brand\">spokehub</a><nav>{who}</nav></header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

/// The page every unknown or hidden run gets: the same bytes either way.
pub fn not_found(viewer: Option<&Viewer>) -> String {
    layout(
        "Not found · spokehub",
        viewer,
        "<h1>Not found</h1><p>There is no such run, or GitHub does not show you its hub repository.</p>\
         <p><a href=\"/runs\">Runs you can see</a></p>",
        None,
    )
}

/// A page with a message (sign-in failures, the page being off).
pub fn message(title: &str, text: &str) -> String {
    layout(
        &format!("{title} · spokehub"),
        None,
        &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(text)),
        None,
    )
}

/// `/runs`: recent runs the person may see.
pub fn runs_list(runs: &[RunRecord], viewer: &Viewer, active_only: bool) -> String {
    let mut rows = String::new();
    for r in runs {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/runs/{id}\">{id}</a></td><td>{task}</td><td>{repo}</td>\
             <td class=\"status-{status}\">{status}</td><td>{conclusion}</td><td>{sender}</td><td>{created}</td></tr>",
            id = esc(&r.id.to_string()),
            task = esc(&r.task),
            repo = esc(r.hub_repo.as_str()),
            status = r.status.as_str(),
            conclusion = esc(r.conclusion.as_deref().unwrap_or("")),
            sender = esc(&r.sender),
            created = time(r.created_at),
        );
    }
    let toggle = if active_only {
        "<a href=\"/runs\">All runs</a>"
    } else {
        "<a href=\"/runs?active=1\">Active runs only</a>"
    };
    let body = format!(
        "<h1>Runs</h1><p>{toggle}</p>{}",
        if runs.is_empty() {
            "<p id=\"no-runs\">No runs you can see yet.</p>".to_owned()
        } else {
            format!(
                "<table id=\"runs\"><thead><tr><th>Run</th><th>Task</th><th>Hub repository</th>\
                 <th>Status</th><th>Conclusion</th><th>Started by</th><th>Created</th></tr></thead>\
                 <tbody>{rows}</tbody></table>"
            )
        }
    );
    layout("Runs · spokehub", Some(viewer), &body, None)
}

/// Everything the run page shows.
pub struct RunView<'a> {
    pub run: &'a RunRecord,
    pub totals: &'a Totals,
    pub spokes: &'a [Spoke],
    /// The newest events, oldest first, and how many the run has in all.
    pub events: &'a [(i64, Option<String>, String, String)],
    pub events_total: usize,
    pub filter: &'a SpokeFilter,
    /// The person may cancel and re-run.
    pub can_act: bool,
    /// GitHub's web address, for repository links.
    pub web_url: &'a str,
}

/// `/runs/{id}`: the filter form (kept while the rest updates) and the live part.
pub fn run_page(v: &RunView, viewer: &Viewer) -> String {
    let id = v.run.id.to_string();
    let mut states = String::from("<option value=\"\">any state</option>");
    for s in SpokeStatus::ALL {
        let selected = if v.filter.state == Some(s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            states,
            "<option value=\"{}\"{selected}>{}</option>",
            s.as_str(),
            label(s, false)
        );
    }
    let body = format!(
        "<form id=\"filters\" method=\"get\" action=\"/runs/{id}\">\
         <label><input type=\"checkbox\" name=\"problems\" value=\"1\" id=\"problems-only\"{checked}> Problems only</label>\
         <label>State <select name=\"state\" id=\"state\">{states}</select></label>\
         <label>Repository <input type=\"search\" name=\"q\" id=\"search\" value=\"{q}\" placeholder=\"name contains…\"></label>\
         <button type=\"submit\" id=\"apply-filters\">Filter</button></form>\
         <div id=\"live\">{live}</div>",
        id = esc(&id),
        checked = if v.filter.problems_only {
            " checked"
        } else {
            ""
        },
        q = esc(&v.filter.search),
        live = run_live(v, viewer),
    );
    let live_url =
        (v.run.status != crate::hub::RunStatus::Completed).then(|| format!("/runs/{id}/live"));
    layout(
        &format!("{} · run {id} · spokehub", v.run.task),
        Some(viewer),
        &body,
        live_url.as_deref(),
    )
}

/// The part of the run page that updates while the run is active.
pub fn run_live(v: &RunView, viewer: &Viewer) -> String {
    let run = v.run;
    let t = v.totals;
    let id = run.id.to_string();
    let mut out = String::new();
    let status = match &run.conclusion {
        Some(c) => format!("{} ({})", run.status.as_str(), c),
        None => run.status.as_str().to_owned(),
    };
    let _ = write!(
        out,
        "<h1>{task} <span class=\"run-id\">run {id}</span></h1>\
         <dl id=\"run-facts\"><dt>Status</dt><dd id=\"run-status\" class=\"status-{st}\">{status}</dd>\
         <dt>Targets</dt><dd>{targets}</dd>\
         <dt>Parameters</dt><dd><code>{params}</code></dd>\
         <dt>Started by</dt><dd>{sender}</dd>\
         <dt>Hub repository</dt><dd>{hub}</dd>\
         <dt>Commit</dt><dd><code>{sha}</code> ({git_ref})</dd>\
         <dt>Created</dt><dd>{created}</dd>",
        task = esc(&run.task),
        id = esc(&id),
        st = run.conclusion.as_deref().map(esc).unwrap_or_else(|| run.status.as_str().to_owned()),
        status = esc(&status),
        targets = if run.targets.trim().is_empty() {
            "every repository of the installation".to_owned()
        } else {
            format!("<code>{}</code>", esc(&run.targets))
        },
        params = esc(&run.params),
        sender = esc(&run.sender),
        hub = esc(run.hub_repo.as_str()),
        sha = esc(run.head_sha.as_ref().map(|s| s.as_str()).unwrap_or("")),
        git_ref = esc(&run.git_ref),
        created = time(run.created_at),
    );
    match run.completed_at {
        Some(done) => {
            let _ = write!(
                out,
                "<dt>Completed</dt><dd>{} (took {})</dd>",
                time(done),
                duration(done - run.created_at)
            );
        }
        None => {
            let _ = write!(
                out,
                "<dt>Running for</dt><dd>{}</dd>",
                duration(crate::store::now_ms() - run.created_at)
            );
        }
    }
    if let Some(reason) = run.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        let _ = write!(out, "<dt>Reason</dt><dd>{}</dd>", esc(reason));
    }
    out.push_str("</dl>");
    let finished =
        t.succeeded + t.failed + t.timed_out + t.dispatch_failed + t.cancelled + t.skipped;
    let _ = write!(
        out,
        "<p><progress id=\"progress\" value=\"{finished}\" max=\"{total}\"></progress> \
         <span id=\"totals\">{finished} of {total} done: {s} succeeded, {f} failed, {to} timed out, \
         {df} dispatch failed, {c} cancelled, {sk} skipped, {a} in progress</span></p>",
        total = t.total.max(1),
        s = t.succeeded,
        f = t.failed,
        to = t.timed_out,
        df = t.dispatch_failed,
        c = t.cancelled,
        sk = t.skipped,
        a = t.active(),
    );
    if v.can_act {
        out.push_str(&actions(v, viewer));
    }
    out.push_str(&spoke_table(v));
    out.push_str(&event_log(v.events, v.events_total));
    out
}

fn actions(v: &RunView, viewer: &Viewer) -> String {
    let id = esc(&v.run.id.to_string());
    let csrf = esc(viewer.csrf);
    // After the button, the page comes back with the same filter.
    let q = v.filter.query(v.filter.page);
    let back = if q.is_empty() {
        String::new()
    } else {
        format!("?{}", esc(&q))
    };
    let mut out = String::from("<div id=\"actions\">");
    if v.run.status != crate::hub::RunStatus::Completed && !v.run.cancel_requested {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/runs/{id}/cancel{back}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"cancel-run\">Cancel run</button></form>"
        );
    }
    if v.totals.failed + v.totals.timed_out > 0 && !v.run.cancel_requested {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/runs/{id}/rerun-failed{back}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"rerun-failed\">Re-run failed</button></form>"
        );
    }
    out.push_str("</div>");
    out
}

fn spoke_table(v: &RunView) -> String {
    let (page, matching) = select(v.spokes, v.filter);
    let mut rows = String::new();
    let web = v.web_url.trim_end_matches('/');
    for s in &page {
        let repo = s.repo.as_str();
        let run_link = s
            .run_url
            .as_deref()
            .and_then(safe_url)
            .map(|u| format!("<a href=\"{u}\" rel=\"noopener noreferrer\">run</a>"))
            .unwrap_or_default();
        let took = match (s.started_at.or(s.dispatched_at), s.finished_at) {
            (Some(a), Some(b)) => duration(b - a),
            (Some(a), None) if !s.status.is_terminal() => duration(crate::store::now_ms() - a),
            _ => String::new(),
        };
        let summary = s
            .summary
            .as_deref()
            .filter(|x| !x.trim().is_empty())
            .map(super::markdown::render)
            .unwrap_or_default();
        // An agent target is no repository: no link.
        let repo_link = match s.repo.agent_name() {
            Some(_) => esc(repo),
            None => safe_url(&format!("{web}/{repo}"))
                .map(|u| format!("<a href=\"{u}\">{}</a>", esc(repo)))
                .unwrap_or_else(|| esc(repo)),
        };
        let _ = write!(
            rows,
            "<tr data-repo=\"{repo_attr}\" data-state=\"{state}\"><td>{repo_link}</td>\
             <td class=\"state status-{state}\">{label}</td><td class=\"reason\">{reason}</td>\
             <td>{attempt}</td><td>{took}</td><td>{run_link}</td><td class=\"summary\">{summary}</td></tr>",
            repo_attr = esc(repo),
            state = s.status.as_str(),
            label = label(s.status, v.run.dry_run),
            reason = esc(s.reason.as_deref().unwrap_or("")),
            attempt = s.attempt,
        );
    }
    let pages = matching.div_ceil(PAGE_SIZE).max(1);
    let current = v.filter.page.clamp(1, pages);
    let id = esc(&v.run.id.to_string());
    let mut nav = format!(
        "<nav id=\"pages\"><span id=\"matching\">{matching} spokes</span> · page {current} of {pages}"
    );
    if current > 1 {
        let _ = write!(
            nav,
            " <a id=\"prev-page\" href=\"/runs/{id}?{}\">previous</a>",
            esc(&v.filter.query(current - 1))
        );
    }
    if current < pages {
        let _ = write!(
            nav,
            " <a id=\"next-page\" href=\"/runs/{id}?{}\">next</a>",
            esc(&v.filter.query(current + 1))
        );
    }
    nav.push_str("</nav>");
    format!(
        "<table id=\"spokes\"><thead><tr><th>Repository</th><th>State</th><th>Reason</th>\
         <th>Attempt</th><th>Duration</th><th>Workflow run</th><th>Summary</th></tr></thead>\
         <tbody>{rows}</tbody></table>{nav}"
    )
}

fn event_log(events: &[(i64, Option<String>, String, String)], total: usize) -> String {
    let mut rows = String::new();
    let start = events.len().saturating_sub(EVENTS_SHOWN);
    for (at, repo, kind, detail) in events[start..].iter().rev() {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(*at),
            esc(repo.as_deref().unwrap_or("")),
            esc(kind),
            esc(detail)
        );
    }
    let shown = if total > events.len() - start {
        format!(" (the newest {} of {total})", events.len() - start)
    } else {
        String::new()
    };
    format!(
        "<section id=\"event-log\"><h2>Events{shown}</h2>{}</section>",
        if events.is_empty() {
            "<p>No events yet.</p>".to_owned()
        } else {
            format!(
                "<table id=\"events\"><thead><tr><th>At</th><th>Repository</th><th>Event</th>\
                 <th>Detail</th></tr></thead><tbody>{rows}</tbody></table>"
            )
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::RepoName;

    fn spoke(name: &str, status: SpokeStatus) -> Spoke {
        let mut s = Spoke::planned(format!("acme/{name}").parse::<RepoName>().unwrap());
        s.status = status;
        s
    }

    #[test]
    fn escapes_everything_that_could_open_a_tag_or_attribute() {
        assert_eq!(
            esc("<a href=\"x\" onclick='y'>&"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;"
        );
        assert_eq!(safe_url("javascript:alert(1)"), None);
        assert!(safe_url("https://github.com/a/b").is_some());
    }

    #[test]
    fn the_filter_keeps_problems_states_and_names_and_pages_them() {
        let mut spokes: Vec<Spoke> = (0..250)
            .map(|i| spoke(&format!("svc-{i:04}"), SpokeStatus::Succeeded))
            .collect();
        spokes.push(spoke("api-failing", SpokeStatus::Failed));
        spokes.push(spoke("svc-timeout", SpokeStatus::TimedOut));
        let problems = SpokeFilter {
            problems_only: true,
            page: 1,
            ..Default::default()
        };
        let (page, n) = select(&spokes, &problems);
        assert_eq!(n, 2);
        assert_eq!(page[0].repo.as_str(), "acme/api-failing");
        let by_name = SpokeFilter {
            search: "SVC-01".into(),
            page: 1,
            ..Default::default()
        };
        assert_eq!(select(&spokes, &by_name).1, 100);
        let third = SpokeFilter {
            page: 3,
            ..Default::default()
        };
        let (page, n) = select(&spokes, &third);
        assert_eq!(n, 252);
        assert_eq!(page.len(), 52);
        let failed = SpokeFilter {
            state: Some(SpokeStatus::Failed),
            page: 1,
            ..Default::default()
        };
        assert_eq!(select(&spokes, &failed).1, 1);
        assert_eq!(failed.query(2), "state=failed&page=2");
    }
}
