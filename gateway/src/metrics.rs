//! `/metrics`: counters and histograms in the Prometheus (OpenMetrics) text format, recorded
//! where things happen and encoded on each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyResult {
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyFault {
    policy: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reload {
    files: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginResult {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowChange {
    change: &'static str,
}

type Latency = Family<Route, Histogram, fn() -> Histogram>;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Latency,
    decisions: Family<PolicyResult, Counter>,
    faults: Family<PolicyFault, Counter>,
    reloads: Family<Reload, Counter>,
    credential_cache: Family<Outcome, Counter>,
    upstream_errors: Family<Kind, Counter>,
    logins: Family<LoginResult, Counter>,
    decision_log_dropped: Counter,
    shadow: Family<ShadowChange, Counter>,
    connections: Gauge,
    connections_refused: Counter,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by route (bodies stream afterwards)",
            latency.clone(),
        );
        let decisions = Family::<PolicyResult, Counter>::default();
        registry.register(
            "policy_decisions",
            "Decisions by policy: granted (everything asked), denied (not everything) or fault",
            decisions.clone(),
        );
        let faults = Family::<PolicyFault, Counter>::default();
        registry.register(
            "policy_faults",
            "Policy faults by policy and kind; each denied its request",
            faults.clone(),
        );
        let reloads = Family::<Reload, Counter>::default();
        registry.register(
            "reloads",
            "Reloads of watched files (config; policies; identity: htpasswd, groups, keys, TLS)",
            reloads.clone(),
        );
        let credential_cache = Family::<Outcome, Counter>::default();
        registry.register(
            "credential_cache",
            "Password checks answered from the credential cache (hit) or by bcrypt (miss)",
            credential_cache.clone(),
        );
        let upstream_errors = Family::<Kind, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests the registry behind the gateway failed: unavailable, timeout or failed",
            upstream_errors.clone(),
        );
        let logins = Family::<LoginResult, Counter>::default();
        registry.register(
            "logins",
            "Logins by source (htpasswd, ldap, oidc) and result (ok, wrong, refused, \
             unavailable, throttled)",
            logins.clone(),
        );
        let decision_log_dropped = Counter::default();
        registry.register(
            "decision_log_dropped",
            "Decision log lines dropped because the writer fell behind",
            decision_log_dropped.clone(),
        );
        let shadow = Family::<ShadowChange, Counter>::default();
        registry.register(
            "shadow_decisions",
            "Decisions the shadow set ([[shadow]]) made beside the serving one, by change: \
             same, widened (grants more), narrowed (grants less) or skipped (it was behind)",
            shadow.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Client connections open now",
            connections.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections refused because [server] max_connections were open",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            decisions,
            faults,
            reloads,
            credential_cache,
            upstream_errors,
            logins,
            decision_log_dropped,
            shadow,
            connections,
            connections_refused,
        }
    }
}

impl Metrics {
    /// A client connection opened (+1) or ended (-1).
    pub fn connections(&self, change: i64) {
        self.connections.inc_by(change);
    }

    /// A client connection refused for want of room.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// One answered request.
    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
        self.latency
            .get_or_create(&Route { route })
            .observe(elapsed.as_secs_f64());
    }

    /// One policy's answer: `granted`, `denied` or `fault` (with its kind).
    pub fn decision(&self, policy: &str, result: &'static str, fault: Option<&'static str>) {
        self.decisions
            .get_or_create(&PolicyResult {
                policy: policy.to_string(),
                result,
            })
            .inc();
        if let Some(kind) = fault {
            self.faults
                .get_or_create(&PolicyFault {
                    policy: policy.to_string(),
                    kind,
                })
                .inc();
        }
    }

    /// A reload of `files` (`config`, `policies` or `identity`).
    pub fn reload(&self, files: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&Reload { files, result }).inc();
    }

    /// A password check: from the cache or by bcrypt.
    pub fn credential_check(&self, cached: bool) {
        let result = if cached { "hit" } else { "miss" };
        self.credential_cache
            .get_or_create(&Outcome { result })
            .inc();
    }

    /// A request the registry behind the gateway failed.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&Kind { kind }).inc();
    }

    /// A login through `source` and how it ended.
    pub fn login(&self, source: &'static str, result: &'static str) {
        self.logins
            .get_or_create(&LoginResult { source, result })
            .inc();
    }

    /// A decision log line that was dropped.
    pub fn decision_log_dropped(&self) {
        self.decision_log_dropped.inc();
    }

    /// A decision of the shadow set: `same`, `widened`, `narrowed` or `skipped`.
    pub fn shadow(&self, change: &'static str) {
        self.shadow.get_or_create(&ShadowChange { change }).inc();
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_appear_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.request("token", 200, Duration::from_millis(3));
        metrics.request("token", 200, Duration::from_millis(5));
        metrics.decision("acl", "denied", None);
        metrics.decision("hostile", "fault", Some("deadline"));
        metrics.reload("policies", false);
        metrics.credential_check(true);
        metrics.upstream_error("unavailable");
        let text = metrics.encode();
        for line in [
            "portcullis_http_requests_total{route=\"token\",status=\"200\"} 2",
            "portcullis_http_request_duration_seconds_count{route=\"token\"} 2",
            "portcullis_policy_decisions_total{policy=\"acl\",result=\"denied\"} 1",
            "portcullis_policy_faults_total{policy=\"hostile\",kind=\"deadline\"} 1",
            "portcullis_reloads_total{files=\"policies\",result=\"failed\"} 1",
            "portcullis_credential_cache_total{result=\"hit\"} 1",
            "portcullis_upstream_errors_total{kind=\"unavailable\"} 1",
            "portcullis_decision_log_dropped_total 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
