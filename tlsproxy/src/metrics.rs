//! gluu-tunnel's Prometheus families, labelled per service. They live as long as the
//! process: a reload keeps counting in the same series.

use gluu_common::validity::Served;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    service: String,
    /// `to_target` (what clients send) or `to_client` (what the target answers).
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    service: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    service: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    service: String,
    /// `full` or `resumed` (a TLS session ticket or id saved the certificate exchange).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Every family gluu-tunnel exports.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    active: Family<ServiceLabel, Gauge>,
    accepted: Family<ServiceLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    handshakes: Family<KindLabel, Counter>,
    handshake_failures: Family<ReasonLabel, Counter>,
    target_failures: Family<TargetLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    certificates: Served,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = Self::default();
        let r = registry.sub_registry_with_prefix("gluu_tunnel");
        r.register(
            "connections_active",
            "Connections open now",
            m.active.clone(),
        );
        r.register("connections", "Connections accepted", m.accepted.clone());
        r.register(
            "bytes",
            "Payload bytes relayed, by direction",
            m.bytes.clone(),
        );
        r.register(
            "handshakes",
            "TLS handshakes completed, full or resumed",
            m.handshakes.clone(),
        );
        r.register(
            "handshake_failures",
            "TLS handshakes that failed, by reason (plaintext, bad_certificate, timeout, ...)",
            m.handshake_failures.clone(),
        );
        r.register(
            "target_connect_failures",
            "Failed connection attempts to a connect target",
            m.target_failures.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        m.certificates = Served::register(r);
        m
    }

    /// The served certificate files (`certificate_expiry_timestamp_seconds`).
    pub fn certificates(&self) -> &Served {
        &self.certificates
    }

    /// The handles one service's connections update (cheap clones of shared atomics).
    pub fn service(&self, name: &str) -> ServiceMetrics {
        let label = ServiceLabel {
            service: name.to_owned(),
        };
        let dir = |direction| DirectionLabel {
            service: name.to_owned(),
            direction,
        };
        // One statement each: `get_or_create` returns a read guard that must be dropped
        // before the family is touched again (holding it across deadlocks on the write).
        let active = self.active.get_or_create(&label).clone();
        let accepted = self.accepted.get_or_create(&label).clone();
        let to_target = self.bytes.get_or_create(&dir("to_target")).clone();
        let to_client = self.bytes.get_or_create(&dir("to_client")).clone();
        let kind = |kind| KindLabel {
            service: name.to_owned(),
            kind,
        };
        let full = self.handshakes.get_or_create(&kind("full")).clone();
        let resumed = self.handshakes.get_or_create(&kind("resumed")).clone();
        ServiceMetrics {
            name: name.to_owned(),
            active,
            accepted,
            to_target,
            to_client,
            full,
            resumed,
            handshake_failures: self.handshake_failures.clone(),
            target_failures: self.target_failures.clone(),
        }
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }
}

/// One service's handles.
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    name: String,
    pub active: Gauge,
    pub accepted: Counter,
    pub to_target: Counter,
    pub to_client: Counter,
    full: Counter,
    resumed: Counter,
    handshake_failures: Family<ReasonLabel, Counter>,
    target_failures: Family<TargetLabel, Counter>,
}

impl ServiceMetrics {
    /// Counts a completed handshake by kind.
    pub fn handshake_done(&self, kind: Option<rustls::HandshakeKind>) {
        match kind {
            Some(rustls::HandshakeKind::Resumed) => self.resumed.inc(),
            _ => self.full.inc(),
        };
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                service: self.name.clone(),
                reason,
            })
            .inc();
    }

    pub fn target_failed(&self, target: &crate::config::Target) {
        self.target_failures
            .get_or_create(&TargetLabel {
                service: self.name.clone(),
                target: target.to_string(),
            })
            .inc();
    }
}
