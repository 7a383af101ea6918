//! Active health checks, NGINX Plus's `health_check uri=PATH interval=T fails=N passes=N`:
//! every `interval`, a GET of `uri` over a fresh HTTPS connection to each node of the
//! location's upstream (with the location's TLS policy, so a node with the wrong
//! certificate fails its check). A 2xx or 3xx answer passes. `fails` failures in a row
//! take the node out of the rotation, `passes` passes in a row bring it back, whatever
//! the traffic does. The first check runs at start-up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use rustls_pki_types::ServerName;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::body;
use crate::config::proxy::HealthCheck;
use crate::runtime::Runtime;
use crate::upstream::{Check, Group, Route, UpstreamTls};

struct Probe {
    group: Arc<Group>,
    node: usize,
    check: HealthCheck,
    tls: Arc<UpstreamTls>,
    name: ServerName<'static>,
    host: HeaderValue,
    connect_timeout: Duration,
    buffer_size: usize,
}

/// Starts the checks `rt` configures (one set per upstream, from the first location that
/// has `health_check`); they stop when `stop` is cancelled (reload, shutdown).
pub fn spawn_all(rt: &Runtime, shared: &Arc<Shared>, stop: &CancellationToken) {
    let mut seen = HashSet::new();
    for (si, server) in rt.config.servers.iter().enumerate() {
        for (li, loc) in server.locations.iter().enumerate() {
            let (Some(check), Some(pass)) = (&loc.settings.health_check, &loc.proxy_pass) else {
                continue;
            };
            let lrt = &rt.locations[si][li];
            let (Some(group), Some(tls), Some(name)) =
                (rt.groups.get(&pass.upstream), &lrt.tls, &lrt.ssl_name)
            else {
                continue;
            };
            if !seen.insert(pass.upstream.clone()) {
                continue;
            }
            let host = server.names.first().unwrap_or(&pass.upstream);
            let host = HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("localhost"));
            for node in 0..group.nodes.len() {
                let probe = Probe {
                    group: group.clone(),
                    node,
                    check: check.clone(),
                    tls: tls.clone(),
                    name: name.clone(),
                    host: host.clone(),
                    connect_timeout: loc.settings.connect_timeout,
                    buffer_size: loc.settings.buffer_size,
                };
                tokio::spawn(run(probe, shared.clone(), stop.clone()));
            }
        }
    }
}

async fn run(p: Probe, shared: Arc<Shared>, stop: CancellationToken) {
    let node = &p.group.nodes[p.node];
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = once(&p, &shared) => r,
        };
        let (ok, detail) = match result {
            Ok(status) => (true, format!("answered {status}")),
            Err(e) => (false, e),
        };
        let unhealthy = p.group.is_unhealthy(p.node);
        let check = Check {
            at: SystemTime::now(),
            ok,
            detail: detail.clone(),
        };
        if let Some(healthy) = node.record_check(check, p.check.fails, p.check.passes, unhealthy) {
            p.group.set_unhealthy(p.node, !healthy);
            if healthy {
                tracing::info!(
                    "upstream {} ({}) is back: health check {} {detail} {} time(s) in a row",
                    node.address,
                    p.group.name,
                    p.check.uri,
                    p.check.passes
                );
            } else {
                tracing::warn!(
                    "upstream {} ({}) taken out: health check {} failed {} time(s) in a row: \
                     {detail}",
                    node.address,
                    p.group.name,
                    p.check.uri,
                    p.check.fails
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(p.check.interval) => {}
        }
    }
}

/// One check: the status on success, what went wrong otherwise.
async fn once(p: &Probe, shared: &Shared) -> Result<StatusCode, String> {
    let node = &p.group.nodes[p.node];
    let wait = p.check.interval.max(Duration::from_secs(1));
    let route = Route {
        tls: &p.tls,
        name: &p.name,
        connect_timeout: p.connect_timeout,
        send_timeout: wait,
        buffer_size: p.buffer_size,
        // A check's connection lives for one request.
        socket_keepalive: false,
    };
    let mut sender = node
        .connect(&route, &shared.permits)
        .await
        .map_err(|f| f.detail)?;
    let mut req = Request::new(body::empty());
    *req.uri_mut() = p
        .check
        .uri
        .parse()
        .map_err(|e| format!("uri {}: {e}", p.check.uri))?;
    let h = req.headers_mut();
    h.insert(header::HOST, p.host.clone());
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("gluu-lb health check"),
    );
    let resp = tokio::time::timeout(wait, sender.send_request(req))
        .await
        .map_err(|_| format!("no answer within {wait:?}"))?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        Ok(status)
    } else {
        Err(format!("answered {status}"))
    }
}
