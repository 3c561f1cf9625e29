//! Prometheus metrics (`GET /metrics`): what the hub did (runs, spokes, dispatches, webhooks,
//! GitHub requests) as counters and histograms of this process, and what is going on now
//! (spokes in flight, the queue) as gauges read from the ledger at each scrape.
//!
//! With several replicas, counters are summed over replicas (each counts what it did), and the
//! active-spoke gauge counts only the runs this replica drives (holds the lease of), so
//! `sum(spokehub_spokes_active)` counts every spoke once. The queue depth is the ledger's, the
//! same on every replica: read it with `max()`.
//!
//! Labels are bounded: tasks, outcomes, states, events, route templates, installation ids.
//! Never a repository name, a token or payload text.

use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskConclusion {
    pub task: String,
    pub conclusion: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskOutcome {
    pub task: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventOutcome {
    pub event: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub installation: String,
    pub resource: String,
}

/// The hub's metrics. One per process, shared.
pub struct Telemetry {
    registry: Registry,
    pub hub_runs: Family<TaskConclusion, Counter>,
    pub hub_run_duration: Family<TaskLabel, Histogram>,
    pub spokes: Family<TaskOutcome, Counter>,
    pub spoke_duration: Histogram,
    pub spokes_active: Family<StateLabel, Gauge>,
    pub dispatch_duration: Histogram,
    pub webhook_deliveries: Family<EventOutcome, Counter>,
    pub callbacks_rejected: Family<ReasonLabel, Counter>,
    pub github_requests: Family<RequestLabels, Counter>,
    pub github_rate_remaining: Family<BudgetLabels, Gauge>,
    pub github_rate_limit: Family<BudgetLabels, Gauge>,
    pub github_waits: Family<ReasonLabel, Counter>,
    pub work_queue_depth: Gauge,
    pub lease_expirations: Counter,
    pub work_refusals: Family<ReasonLabel, Counter>,
    /// Scrapes answered from one encoding at a time.
    encode_lock: Mutex<()>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

fn duration_family() -> Family<TaskLabel, Histogram> {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 16)))
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let t = Telemetry {
            hub_runs: Family::default(),
            hub_run_duration: duration_family(),
            spokes: Family::default(),
            spoke_duration: Histogram::new(exponential_buckets(0.5, 2.0, 16)),
            spokes_active: Family::default(),
            dispatch_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            webhook_deliveries: Family::default(),
            callbacks_rejected: Family::default(),
            github_requests: Family::default(),
            github_rate_remaining: Family::default(),
            github_rate_limit: Family::default(),
            github_waits: Family::default(),
            work_queue_depth: Gauge::default(),
            lease_expirations: Counter::default(),
            work_refusals: Family::default(),
            encode_lock: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "spokehub_hub_runs",
            "Hub runs completed, by task and conclusion",
            t.hub_runs.clone(),
        );
        registry.register(
            "spokehub_hub_run_duration_seconds",
            "From trigger to the run's conclusion",
            t.hub_run_duration.clone(),
        );
        registry.register(
            "spokehub_spokes",
            "Spokes that ended, by task and outcome (succeeded, failed, timed_out, cancelled, skipped, dispatch_failed)",
            t.spokes.clone(),
        );
        registry.register(
            "spokehub_spoke_duration_seconds",
            "From a spoke's dispatch to its end",
            t.spoke_duration.clone(),
        );
        registry.register(
            "spokehub_spokes_active",
            "Spokes not yet ended of the runs this replica drives, by state",
            t.spokes_active.clone(),
        );
        registry.register(
            "spokehub_dispatch_duration_seconds",
            "The workflow_dispatch request, answer included",
            t.dispatch_duration.clone(),
        );
        registry.register(
            "spokehub_webhook_deliveries",
            "Webhook deliveries by event and outcome (accepted, duplicate, bad_signature, malformed, too_large, refused, ignored)",
            t.webhook_deliveries.clone(),
        );
        registry.register(
            "spokehub_callbacks_rejected",
            "spoke_complete callbacks not believed, by reason",
            t.callbacks_rejected.clone(),
        );
        registry.register(
            "spokehub_github_requests",
            "Requests to GitHub by method, route template and status",
            t.github_requests.clone(),
        );
        registry.register(
            "spokehub_github_rate_limit_remaining",
            "GitHub's x-ratelimit-remaining, by installation and resource, as last seen",
            t.github_rate_remaining.clone(),
        );
        registry.register(
            "spokehub_github_rate_limit",
            "GitHub's x-ratelimit-limit, by installation and resource, as last seen",
            t.github_rate_limit.clone(),
        );
        registry.register(
            "spokehub_github_waits",
            "Waits GitHub asked for before sending again, by reason",
            t.github_waits.clone(),
        );
        registry.register(
            "spokehub_work_queue_depth",
            "Deliveries waiting to be processed in the ledger (the same on every replica: use max())",
            t.work_queue_depth.clone(),
        );
        registry.register(
            "spokehub_lease_expirations",
            "Leases of another (dead or stalled) replica this replica took over",
            t.lease_expirations.clone(),
        );
        registry.register(
            "spokehub_work_refusals",
            "Requests of the work API refused for who sent them, by reason",
            t.work_refusals.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Telemetry { registry, ..t }
    }

    /// A scrape: the gauges read from the ledger (`active`: state and spokes, `queued`), then
    /// the exposition, under one lock so that concurrent scrapes never see a half-set gauge.
    pub fn scrape(&self, active: Option<&[(String, i64)]>, queued: Option<i64>) -> String {
        let _one = self.encode_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(active) = active {
            self.set_spokes_active(active);
        }
        if let Some(queued) = queued {
            self.work_queue_depth.set(queued);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Exports a task's counters at zero before anything is counted, so that `increase()` sees
    /// the first failure (a counter that appears at 1 would show no increase). Called when a
    /// replica first meets a run of the task.
    pub fn task_seen(&self, task: &str) {
        for outcome in SPOKE_OUTCOMES {
            drop(self.spokes.get_or_create(&TaskOutcome {
                task: task.to_owned(),
                outcome: (*outcome).to_owned(),
            }));
        }
        for conclusion in ["success", "failure", "neutral", "cancelled"] {
            drop(self.hub_runs.get_or_create(&TaskConclusion {
                task: task.to_owned(),
                conclusion: conclusion.to_owned(),
            }));
        }
    }

    /// Counts a run that concluded.
    pub fn run_concluded(&self, task: &str, conclusion: &str, seconds: f64) {
        self.hub_runs
            .get_or_create(&TaskConclusion {
                task: task.to_owned(),
                conclusion: conclusion.to_owned(),
            })
            .inc();
        self.hub_run_duration
            .get_or_create(&TaskLabel {
                task: task.to_owned(),
            })
            .observe(seconds.max(0.0));
    }

    /// Counts a spoke that ended (and how long it ran, when it was dispatched).
    pub fn spoke_ended(&self, task: &str, outcome: &str, seconds: Option<f64>) {
        self.spokes
            .get_or_create(&TaskOutcome {
                task: task.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(s) = seconds {
            self.spoke_duration.observe(s.max(0.0));
        }
    }

    pub fn delivery(&self, event: &str, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&EventOutcome {
                event: event_label(event).to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn callback_rejected(&self, reason: &str) {
        self.callbacks_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn work_refused(&self, reason: &str) {
        self.work_refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn github_request(&self, method: &str, path: &str, status: u16) {
        self.github_requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route_template(path),
                status: status.to_string(),
            })
            .inc();
    }

    /// GitHub's budget as a response stated it (`limit` when the response named it).
    pub fn github_budget(
        &self,
        installation: Option<u64>,
        resource: &str,
        remaining: u64,
        limit: Option<u64>,
    ) {
        let labels = BudgetLabels {
            installation: installation.map_or_else(|| "app".to_owned(), |i| i.to_string()),
            resource: resource_label(resource).to_owned(),
        };
        self.github_rate_remaining
            .get_or_create(&labels)
            .set(remaining.min(i64::MAX as u64) as i64);
        if let Some(limit) = limit {
            self.github_rate_limit
                .get_or_create(&labels)
                .set(limit.min(i64::MAX as u64) as i64);
        }
    }

    pub fn github_wait(&self, reason: &str) {
        self.github_waits
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Replaces the active-spoke gauge with `counts` (state, spokes).
    fn set_spokes_active(&self, counts: &[(String, i64)]) {
        self.spokes_active.clear();
        for state in ACTIVE_STATES {
            self.spokes_active
                .get_or_create(&StateLabel {
                    state: (*state).to_owned(),
                })
                .set(0);
        }
        for (state, n) in counts {
            self.spokes_active
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*n);
        }
    }
}

/// How a spoke can end.
pub const SPOKE_OUTCOMES: &[&str] = &[
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "skipped",
    "dispatch_failed",
];

/// The states a spoke in flight or waiting can be in (always exported, zero when none).
pub const ACTIVE_STATES: &[&str] = &[
    "planned",
    "dispatching",
    "unknown",
    "dispatched",
    "running",
    "retry_wait",
];

/// Webhook events as labels: the handled ones, anything else `other`.
fn event_label(event: &str) -> &str {
    match event {
        "workflow_dispatch"
        | "workflow_run"
        | "repository_dispatch"
        | "check_run"
        | "ping"
        | "installation"
        | "installation_repositories" => event,
        _ => "other",
    }
}

/// GitHub's rate-limit resources as labels.
fn resource_label(resource: &str) -> &str {
    match resource {
        "core" | "search" | "graphql" | "integration_manifest" | "code_search" => resource,
        _ => "other",
    }
}

/// A request path as a route template: owners, repositories, workflow files, refs and ids are
/// replaced, so no repository name reaches a label.
pub fn route_template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut i = 0;
    while i < segments.len() {
        let s = segments[i];
        let prev = out.last().copied();
        match prev {
            Some("repos") if i + 1 < segments.len() => {
                out.push("{owner}");
                out.push("{repo}");
                i += 2;
                continue;
            }
            Some("orgs") => out.push("{org}"),
            Some("users") => out.push("{user}"),
            Some("enterprises") => out.push("{enterprise}"),
            Some("workflows") => out.push("{workflow}"),
            Some("commits") => out.push("{ref}"),
            // The rest of the path is the ref (`heads/feature/x`).
            Some("ref") | Some("refs") | Some("branches") => {
                out.push("{ref}");
                break;
            }
            _ if s.chars().all(|c| c.is_ascii_digit()) => out.push("{id}"),
            _ => out.push(s),
        }
        i += 1;
    }
    format!("/{}", out.join("/"))
}

/// The process' own metrics, read from /proc at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        // utime + stime, in clock ticks (100 a second on Linux).
        let cpu = (ticks(11) + ticks(12)) / 100.0;
        let page = 4096.0;
        let rss = ticks(21) * page;
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0);
        let counter = ConstCounter::new(cpu);
        let m = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time",
            None,
            counter.metric_type(),
        )?;
        counter.encode(m)?;
        let gauge = ConstGauge::new(rss);
        let m = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(m)?;
        let gauge = ConstGauge::new(fds as i64);
        let m = encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_no_repository_and_no_id() {
        assert_eq!(
            route_template("/repos/acme/svc-1/actions/workflows/spokehub-spoke.yml/dispatches"),
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches"
        );
        assert_eq!(
            route_template("/repos/acme/hub/check-runs/123456?x=1"),
            "/repos/{owner}/{repo}/check-runs/{id}"
        );
        assert_eq!(
            route_template("/repos/acme/hub/commits/main/check-runs"),
            "/repos/{owner}/{repo}/commits/{ref}/check-runs"
        );
        assert_eq!(
            route_template("/repos/acme/hub/git/ref/heads/feature/x"),
            "/repos/{owner}/{repo}/git/ref/{ref}"
        );
        assert_eq!(
            route_template("/orgs/acme/properties/values?per_page=100"),
            "/orgs/{org}/properties/values"
        );
        assert_eq!(
            route_template("/installation/repositories?per_page=100&page=3"),
            "/installation/repositories"
        );
        assert_eq!(
            route_template("/app/installations/42/access_tokens"),
            "/app/installations/{id}/access_tokens"
        );
    }

    #[test]
    fn the_exposition_has_every_series_and_process_metrics() {
        let t = Telemetry::new();
        t.run_concluded("deploy", "failure", 12.0);
        t.spoke_ended("deploy", "failed", Some(3.0));
        t.github_request("POST", "/repos/acme/secret-repo/dispatches", 204);
        let text = t.scrape(Some(&[("running".into(), 4)]), Some(0));
        for needle in [
            "spokehub_hub_runs_total{task=\"deploy\",conclusion=\"failure\"} 1",
            "spokehub_hub_run_duration_seconds_count{task=\"deploy\"} 1",
            "spokehub_spokes_total{task=\"deploy\",outcome=\"failed\"} 1",
            "spokehub_spokes_active{state=\"running\"} 4",
            "spokehub_spokes_active{state=\"dispatched\"} 0",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(!text.contains("secret-repo"), "{text}");
    }
}
