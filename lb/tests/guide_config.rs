//! The guide's nginx.conf, as written (its "---> Change this" markers removed), read by
//! gluu-lb's grammar: every directive where nginx sees it.

use gluu_lb::config::grammar::{Directive, parse_file};
use gluu_lb::config::upstream::{Method, upstream};

fn block(d: &Directive) -> &[Directive] {
    d.block
        .as_deref()
        .unwrap_or_else(|| panic!("{} has no block", d.name))
}

#[test]
fn the_guides_nginx_conf_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/guide-nginx.conf");
    let top = parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = top.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["events", "http"]);
    assert_eq!(block(&top[0])[0].args, ["6500"]);
    let http = block(&top[1]);
    let kinds: Vec<_> = http
        .iter()
        .map(|d| (d.name.as_str(), d.args.first().map(String::as_str)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("upstream", Some("backend_id")),
            ("upstream", Some("backend")),
            ("server", None),
            ("server", None)
        ]
    );
    let mut warnings = Vec::new();
    let sticky = upstream(&http[0], &mut warnings).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (sticky.name.as_str(), sticky.method),
        ("backend_id", Method::IpHash)
    );
    let plain = upstream(&http[1], &mut warnings).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        (plain.name.as_str(), plain.method),
        ("backend", Method::RoundRobin)
    );
    assert!(
        plain
            .servers
            .iter()
            .all(|s| s.max_fails == 2 && s.fail_timeout.as_secs() == 10)
    );
    let ip_hash_upstream = block(&http[0]);
    assert_eq!(ip_hash_upstream[0].name, "ip_hash");
    assert_eq!(
        ip_hash_upstream[1].args,
        ["159.203.126.10:443", "max_fails=2", "fail_timeout=10s"]
    );
    let tls_server = block(&http[3]);
    let ssl_on = tls_server
        .iter()
        .find(|d| d.name == "ssl")
        .expect("ssl on;");
    assert_eq!(ssl_on.args, ["on"]);
    let locations: Vec<_> = tls_server
        .iter()
        .filter(|d| d.name == "location")
        .map(|d| d.args.join(" "))
        .collect();
    assert_eq!(
        locations,
        [
            "~ ^(/)$",
            "/.well-known",
            "/oxauth",
            "/identity",
            "/cas",
            "/passport"
        ]
    );
    let identity = tls_server
        .iter()
        .find(|d| d.args == ["/identity"])
        .expect("identity");
    let pass = block(identity)
        .iter()
        .find(|d| d.name == "proxy_pass")
        .expect("proxy_pass");
    assert_eq!(pass.args, ["https://backend_id/identity"]);
    let redirect = block(&http[2])
        .iter()
        .find(|d| d.name == "return")
        .expect("return");
    assert_eq!(
        redirect.args,
        ["301", "https://loadbalance.example.org$request_uri"]
    );
    assert_eq!(redirect.place.line, 18);
}

#[test]
fn the_guides_nginx_conf_loads_with_its_two_warnings() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/guide-nginx.conf");
    let c = gluu_lb::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.worker_connections, 6500);
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.servers.len(), 2);
    let tls = &c.servers[1];
    assert_eq!(tls.listen[0].addr.port(), 443);
    assert!(tls.listen[0].ssl, "`ssl on;` makes `listen 443` TLS");
    assert_eq!(tls.locations.len(), 6);
    assert_eq!(c.servers[0].ret.as_ref().map(|r| r.code), Some(301));
    let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("\"ssl\" directive is deprecated")
            && warnings[0].ends_with("guide-nginx.conf:24"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("\"loadbalance.example.org\", which no server_name has; did you mean \"loadbalancer.example.org\"")
            && warnings[1].ends_with("guide-nginx.conf:18"),
        "{warnings:?}"
    );
}
