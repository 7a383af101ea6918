//! The configuration: nginx's grammar ([`grammar`]) read into a directive tree, then into
//! typed blocks ([`upstream`], [`server`], [`location`], [`proxy`]) with nginx's meaning. Directives
//! gluu-lb does not (yet) support are errors naming file, line and directive, never
//! silently ignored. Warnings (`ssl on;`, a redirect to a host no `server_name` has) are
//! collected for `-t` and start-up.

pub mod grammar;
pub mod location;
pub mod proxy;
pub mod server;
pub mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};

use grammar::{Directive, GrammarError};
use server::Server;
use upstream::Upstream;

/// Something that runs but deserves the admin's attention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub at: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.message, self.at)
    }
}

/// nginx's default `worker_connections`.
const DEFAULT_WORKER_CONNECTIONS: usize = 512;

/// A validated nginx.conf.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    /// `events { worker_connections N; }`: connections at once, client and upstream sides
    /// counted together, as nginx counts them.
    pub worker_connections: usize,
    pub upstreams: Vec<Upstream>,
    pub servers: Vec<Server>,
    pub warnings: Vec<Warning>,
}

fn block(d: &Directive) -> Result<&[Directive], GrammarError> {
    d.block
        .as_deref()
        .ok_or_else(|| d.error(format!("directive \"{}\" has no opening \"{{\"", d.name)))
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, GrammarError> {
        let top = grammar::parse_file(path)?;
        let root = path.parent().unwrap_or(Path::new("."));
        let mut c = Config {
            path: path.to_owned(),
            worker_connections: DEFAULT_WORKER_CONNECTIONS,
            upstreams: Vec::new(),
            servers: Vec::new(),
            warnings: Vec::new(),
        };
        let mut http_seen = false;
        for d in &top {
            match d.name.as_str() {
                // Accepted: the runtime uses every core whatever this says.
                "worker_processes" => {}
                "events" => {
                    for e in block(d)? {
                        match (e.name.as_str(), e.args.as_slice()) {
                            ("worker_connections", [n]) => {
                                c.worker_connections =
                                    n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(
                                        || e.error(format!("invalid number \"{n}\"")),
                                    )?;
                            }
                            _ => {
                                return Err(
                                    e.error(format!("unknown directive \"{}\" in events", e.name))
                                );
                            }
                        }
                    }
                }
                "http" => {
                    if http_seen {
                        return Err(d.error("\"http\" directive is duplicate"));
                    }
                    http_seen = true;
                    for h in block(d)? {
                        match h.name.as_str() {
                            "upstream" => {
                                let u = upstream::upstream(h)?;
                                if let Some(prev) = c.upstreams.iter().find(|p| p.name == u.name) {
                                    return Err(h.error(format!(
                                        "duplicate upstream \"{}\" (first at {})",
                                        u.name, prev.place
                                    )));
                                }
                                c.upstreams.push(u);
                            }
                            "server" => c.servers.push(server::server(h, root, &mut c.warnings)?),
                            other => {
                                return Err(
                                    h.error(format!("unknown directive \"{other}\" in http"))
                                );
                            }
                        }
                    }
                }
                other => return Err(d.error(format!("unknown directive \"{other}\""))),
            }
        }
        if !http_seen {
            return Err(GrammarError {
                at: path.display().to_string(),
                message: "no \"http\" block: nothing to serve".to_owned(),
            });
        }
        c.check_upstream_references()?;
        c.check_redirect_hosts();
        Ok(c)
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    fn check_upstream_references(&self) -> Result<(), GrammarError> {
        for l in self.servers.iter().flat_map(|s| &s.locations) {
            if let Some(pass) = &l.proxy_pass
                && self.upstream(&pass.upstream).is_none()
            {
                return Err(GrammarError {
                    at: l.place.to_string(),
                    message: format!(
                        "host not found in upstream \"{}\" (proxy_pass names an upstream block)",
                        pass.upstream
                    ),
                });
            }
        }
        Ok(())
    }

    /// The guide redirects to `loadbalance.example.org` where every server is
    /// `loadbalancer.example.org`: a redirect to a host no `server_name` has, but one edit
    /// or two away from one, is flagged.
    fn check_redirect_hosts(&mut self) {
        let names: Vec<&str> = self
            .servers
            .iter()
            .flat_map(|s| s.names.iter().map(String::as_str))
            .collect();
        let mut found = Vec::new();
        for r in self.servers.iter().filter_map(|s| s.ret.as_ref()) {
            let Some(host) = r.target.as_deref().and_then(redirect_host) else {
                continue;
            };
            if names.contains(&host) {
                continue;
            }
            if let Some(near) = names.iter().find(|n| edit_distance(n, host) <= 2) {
                found.push(Warning {
                    at: r.place.to_string(),
                    message: format!(
                        "redirect to host \"{host}\", which no server_name has; did you mean \
                         \"{near}\"?"
                    ),
                });
            }
        }
        self.warnings.extend(found);
    }
}

/// The literal host of a redirect URL (`https://HOST[:port][/...|$var]`).
fn redirect_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', ':', '$', '?']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|h| !h.is_empty())
}

/// Levenshtein distance, for spotting typos in host names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(ca != *cb));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
    }

    const BASE: &str = "upstream b { server 10.0.0.1:443; }\n";

    #[test]
    fn distances_and_hosts() {
        assert_eq!(
            edit_distance("loadbalancer.example.org", "loadbalance.example.org"),
            1
        );
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            redirect_host("https://h.example.org$request_uri"),
            Some("h.example.org")
        );
        assert_eq!(redirect_host("https://h:8443/x"), Some("h"));
        assert_eq!(redirect_host("/relative"), None);
    }

    #[test]
    fn errors_name_the_directive_and_line() {
        let cases = [
            (
                "events { worker_connections 0; }\nhttp { }",
                "invalid number \"0\"",
                ":1",
            ),
            (
                "events { use epoll; }\nhttp { }",
                "unknown directive \"use\" in events",
                ":1",
            ),
            ("gzip on;\nhttp { }", "unknown directive \"gzip\"", ":1"),
            (
                "http { }\nhttp { }",
                "\"http\" directive is duplicate",
                ":2",
            ),
            (
                "http {\n gzip on;\n}",
                "unknown directive \"gzip\" in http",
                ":2",
            ),
            (
                "http {\n upstream b { server a:1; }\n upstream b { server c:1; }\n}",
                "duplicate upstream \"b\"",
                ":3",
            ),
            (
                "http {\n server {\n  location / { proxy_pass https://nowhere; }\n }\n}",
                "host not found in upstream \"nowhere\"",
                ":3",
            ),
            (
                "http {\n server {\n  listen 443 ssl;\n }\n}",
                "no \"ssl_certificate\"",
                ":2",
            ),
            (
                "http {\n server {\n  listen 443 quic;\n }\n}",
                "invalid parameter \"quic\"",
                ":3",
            ),
            (
                "http {\n server {\n  listen 443 ssl;\n  ssl_protocols TLSv1 TLSv1.2;\n }\n}",
                "ssl_protocols TLSv1\"",
                ":4",
            ),
            (
                "http {\n server {\n  return 999;\n }\n}",
                "invalid return code \"999\"",
                ":3",
            ),
            (
                "http {\n server {\n  root /var/www;\n }\n}",
                "unknown directive \"root\" in server",
                ":3",
            ),
        ];
        for (text, want, line) in cases {
            let e = load(&format!("{text}\n")).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.ends_with(line), "{text:?}: {e}");
        }
        assert!(
            load("events { }\n")
                .expect_err("no http")
                .to_string()
                .contains("no \"http\" block")
        );
    }

    #[test]
    fn listen_forms_and_ssl_on() {
        let c = load(&format!(
            "http {{\n{BASE} server {{ listen 80; listen 127.0.0.1:8443 ssl http2; listen [::1]:9443; ssl on;\n ssl_certificate c.crt; ssl_certificate_key c.key; }}\n}}\n"
        ))
        .expect("valid");
        let s = &c.servers[0];
        assert_eq!(s.listen[0].addr, "0.0.0.0:80".parse().expect("a"));
        assert_eq!(s.listen[1].addr, "127.0.0.1:8443".parse().expect("a"));
        assert!(s.listen[1].http2);
        assert_eq!(s.listen[2].addr, "[::1]:9443".parse().expect("a"));
        assert!(
            s.listen.iter().all(|l| l.ssl),
            "ssl on makes every listen TLS"
        );
        assert!(s.certificate.as_deref().expect("cert").is_absolute());
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].message.contains("deprecated"),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.worker_connections, DEFAULT_WORKER_CONNECTIONS);
    }
}
