//! gluu-lb's Prometheus families. They live as long as the process: a reload keeps counting
//! in the same series. Per-node state (up, failing, active requests, last check) is in the
//! JSON at `/status` (built by `status_json` in `lib.rs`).

use gluu_common::validity::Served;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    /// One of [`CLASSES`].
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
struct ZoneLabel {
    /// `limit_req` or `limit_conn`.
    directive: &'static str,
    zone: String,
    /// nginx's `$limit_req_status` in lower case: `delayed`, `rejected`,
    /// `delayed_dry_run`, `rejected_dry_run`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Response status classes, by hundreds from 1xx (anything above 5xx counts as 5xx).
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every family gluu-lb exports.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    connections_active: Gauge,
    connections: Counter,
    requests: Family<StatusLabel, Counter>,
    /// The `requests` series of each class in [`CLASSES`], looked up once: a response
    /// touches one counter, no lock and no label hashing.
    by_class: [Counter; CLASSES.len()],
    abandoned: Counter,
    upstream_requests: Family<NodeLabel, Counter>,
    upstream_failures: Family<NodeReasonLabel, Counter>,
    upstream_connects: Family<NodeLabel, Counter>,
    upstream_certificates: Family<NodeLabel, Gauge>,
    retries: Counter,
    handshake_failures: Family<ReasonLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    limited: Family<ZoneLabel, Counter>,
    certificates: Served,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = Self::default();
        m.by_class = CLASSES.map(|class| m.requests.get_or_create(&StatusLabel { class }).clone());
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
            "requests_abandoned",
            "Requests whose client went away before their response began (nginx logs 499)",
            m.abandoned.clone(),
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
            "upstream_certificate_expiry_timestamp_seconds",
            "When the certificate chain a node presented at its last new connection stops \
             being valid (the earliest notAfter in it), in Unix seconds",
            m.upstream_certificates.clone(),
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
        r.register(
            "limited",
            "Requests limit_req delayed or refused, or limit_conn refused (or would have, with \
             their dry_run), by directive and zone",
            m.limited.clone(),
        );
        m.certificates = Served::register(r);
        m
    }

    /// A request `limit_req` delayed or refused, or `limit_conn` refused; `result` is one
    /// of [`ZoneLabel`]'s.
    pub fn limited(&self, directive: &'static str, zone: &str, result: &'static str) {
        let label = ZoneLabel {
            directive,
            zone: zone.to_owned(),
            result,
        };
        self.limited.get_or_create(&label).inc();
    }

    /// A client connection opened; the returned guard counts it as active until dropped.
    pub fn connection(&self) -> ActiveGuard {
        self.connections.inc();
        self.connections_active.inc();
        ActiveGuard(self.connections_active.clone())
    }

    /// Client connections open now, and accepted since the start.
    pub fn connection_counts(&self) -> (u64, u64) {
        (
            u64::try_from(self.connections_active.get()).unwrap_or(0),
            self.connections.get(),
        )
    }

    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
        self.by_class[class].inc();
    }

    /// A request on its way: counted as abandoned if dropped before [`Unanswered::answered`]
    /// (its client left: hyper drops the request's future). No shared count is touched
    /// per request.
    pub fn unanswered(&self) -> Unanswered<'_> {
        Unanswered(Some(&self.abandoned))
    }

    /// A node's per-request counters, looked up once (no label hashing per request).
    pub fn node(&self, upstream: &str, node: &str) -> NodeCounters {
        let label = NodeLabel {
            upstream: upstream.to_owned(),
            node: node.to_owned(),
        };
        let requests = self.upstream_requests.get_or_create(&label).clone();
        let connects = self.upstream_connects.get_or_create(&label).clone();
        NodeCounters {
            requests,
            connects,
            certificate: NodeCertificate {
                family: self.upstream_certificates.clone(),
                label,
            },
        }
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

    /// The served certificate files (`certificate_expiry_timestamp_seconds`).
    pub fn certificates(&self) -> &Served {
        &self.certificates
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }
}

/// One node's request and connection counters.
#[derive(Clone, Debug)]
pub struct NodeCounters {
    pub requests: Counter,
    pub connects: Counter,
    pub certificate: NodeCertificate,
}

/// A node's `upstream_certificate_expiry_timestamp_seconds`, made when the node first
/// presents a certificate (a series at 0 before that would read as long expired).
#[derive(Clone, Debug)]
pub struct NodeCertificate {
    family: Family<NodeLabel, Gauge>,
    label: NodeLabel,
}

impl NodeCertificate {
    pub fn set(&self, not_after: i64) {
        self.family.get_or_create(&self.label).set(not_after);
    }
}

/// Counts a connection as active while it lives.
#[derive(Debug)]
pub struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// See [`Metrics::unanswered`].
#[derive(Debug)]
pub struct Unanswered<'a>(Option<&'a Counter>);

impl Unanswered<'_> {
    pub fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(abandoned) = self.0 {
            abandoned.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `gluu_lb_requests_total` value of each class in [`CLASSES`], as exported.
    fn exported(registry: &Registry) -> [String; CLASSES.len()] {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        CLASSES.map(|class| {
            let series = format!("gluu_lb_requests_total{{class=\"{class}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .unwrap_or_else(|| panic!("no {series:?} in:\n{text}"))
                .to_owned()
        })
    }

    #[test]
    fn responses_count_by_status_class_and_every_class_is_exported_from_the_start() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        assert_eq!(exported(&registry), ["0", "0", "0", "0", "0"]);
        for status in [101, 200, 204, 301, 404, 404, 502, 599] {
            m.response(status);
        }
        assert_eq!(exported(&registry), ["1", "2", "1", "2", "2"]);
    }
}
