//! gluu-lb's Prometheus families. They live as long as the process: a reload keeps counting
//! in the same series. Per-node state (up, failing, active requests, last check) is in the
//! JSON at `/status` ([`crate::upstream::status_json`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    /// `2xx`, `3xx`, `4xx`, `5xx`.
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    upstream: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeReasonLabel {
    upstream: String,
    node: String,
    /// `connect`, `tls`, `timeout`, `invalid_header`, `http_500`, ...
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Every family gluu-lb exports.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    connections_active: Gauge,
    connections: Counter,
    requests: Family<StatusLabel, Counter>,
    upstream_requests: Family<NodeLabel, Counter>,
    upstream_failures: Family<NodeReasonLabel, Counter>,
    upstream_connects: Family<NodeLabel, Counter>,
    retries: Counter,
    handshake_failures: Family<ReasonLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("gluu_lb");
        r.register(
            "connections_active",
            "Client connections open now",
            m.connections_active.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted",
            m.connections.clone(),
        );
        r.register(
            "requests",
            "Responses sent to clients, by status class",
            m.requests.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests sent to a node",
            m.upstream_requests.clone(),
        );
        r.register(
            "upstream_failures",
            "Requests to a node that failed, by reason",
            m.upstream_failures.clone(),
        );
        r.register(
            "upstream_connects",
            "New TCP+TLS connections opened to a node (the rest reuse the keep-alive pool)",
            m.upstream_connects.clone(),
        );
        r.register(
            "retries",
            "Requests passed to the next node (proxy_next_upstream)",
            m.retries.clone(),
        );
        r.register(
            "handshake_failures",
            "Client TLS handshakes that failed, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        m
    }

    /// A client connection opened; the returned guard counts it as active until dropped.
    pub fn connection(&self) -> ActiveGuard {
        self.connections.inc();
        self.connections_active.inc();
        ActiveGuard(self.connections_active.clone())
    }

    pub fn response(&self, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.get_or_create(&StatusLabel { class }).inc();
    }

    /// A node's per-request counters, looked up once (no label hashing per request).
    pub fn node(&self, upstream: &str, node: &str) -> NodeCounters {
        let label = NodeLabel {
            upstream: upstream.to_owned(),
            node: node.to_owned(),
        };
        let requests = self.upstream_requests.get_or_create(&label).clone();
        let connects = self.upstream_connects.get_or_create(&label).clone();
        NodeCounters { requests, connects }
    }

    pub fn upstream_failure(&self, upstream: &str, node: &str, reason: &'static str) {
        let label = NodeReasonLabel {
            upstream: upstream.to_owned(),
            node: node.to_owned(),
            reason,
        };
        self.upstream_failures.get_or_create(&label).inc();
    }

    pub fn retry(&self) {
        self.retries.inc();
    }

    pub fn handshake_failure(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }
}

/// One node's request and connection counters.
#[derive(Clone, Debug, Default)]
pub struct NodeCounters {
    pub requests: Counter,
    pub connects: Counter,
}

/// Counts a connection as active while it lives.
#[derive(Debug)]
pub struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
