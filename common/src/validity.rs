//! When the certificates a daemon serves stop being valid, said before clients refuse them.
//!
//! The guide makes its certificates by hand with `openssl ... -days 365` (stunnel's) or lets
//! Gluu's setup make them (`httpd.crt`), and nothing reminds anyone a year later: the day
//! one ends, browsers refuse the balancer and chain-verifying tunnels refuse each other.
//! Each daemon therefore says, at `-t`, at start and at every reload, which certificate
//! file ends within [`WARN_WITHIN`] (or has ended, or is not valid yet), says it again once
//! a day while it keeps running, and exports every served file's end as
//! `<daemon>_certificate_expiry_timestamp_seconds{file}` for an alert.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How long before a certificate's end the warnings start (certbot renews at 30 days).
pub const WARN_WITHIN: Duration = Duration::from_secs(30 * DAY);

/// How often a running daemon says its warnings again.
pub const REMIND_EVERY: Duration = Duration::from_secs(DAY);

const DAY: u64 = 86_400;

/// The validity period of a certificate file: that of the certificate in it that ends first
/// (a chain's intermediate can end before the leaf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The file, or for a certificate a peer presented, the peer's address.
    pub path: PathBuf,
    /// The subject of that certificate, as `openssl x509 -subject` prints it (`CN=...`).
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// `not_after` in the form `openssl x509 -enddate` prints.
    pub not_after_text: String,
}

impl Validity {
    /// `None` when no certificate of `chain` can be read as X.509 (rustls, which loaded
    /// them, would have refused such a file already).
    pub fn of(path: &Path, chain: &[CertificateDer<'_>]) -> Option<Validity> {
        chain
            .iter()
            .filter_map(|der| X509Certificate::from_der(der.as_ref()).ok())
            .map(|(_, cert)| {
                let v = cert.validity();
                Validity {
                    path: path.to_owned(),
                    subject: cert.subject().to_string(),
                    not_before: v.not_before.timestamp(),
                    not_after: v.not_after.timestamp(),
                    not_after_text: v.not_after.to_string(),
                }
            })
            .min_by_key(|v| v.not_after)
    }

    /// What to tell the admin at `now`: `None` while more than [`WARN_WITHIN`] remain.
    pub fn warning(&self, now: SystemTime) -> Option<String> {
        let what = format!("certificate {} ({})", self.path.display(), self.subject);
        self.warning_as(&what, "renew it on its key and reload", now)
    }

    /// [`Validity::warning`] for a certificate described as `what`, and `fix` for what to
    /// do when it ends.
    pub fn warning_as(&self, what: &str, fix: &str, now: SystemTime) -> Option<String> {
        let now = unix(now);
        if now < self.not_before {
            return Some(format!(
                "{what} is not valid yet (it starts {}): clients refuse it until then (is \
                 this machine's clock right?)",
                days(self.not_before - now, "in ")
            ));
        }
        if now > self.not_after {
            return Some(format!(
                "{what} expired on {}, {}: clients that check dates refuse it; {fix}",
                self.not_after_text,
                days(now - self.not_after, "") + " ago"
            ));
        }
        let left = self.not_after - now;
        (left <= WARN_WITHIN.as_secs() as i64).then(|| {
            format!(
                "{what} expires on {}, {}: {fix}",
                self.not_after_text,
                days(left, "in ")
            )
        })
    }
}

/// Adds the validity of the certificate file `path` (holding `chain`) to `served` unless a
/// file of that path is there already, and returns what to warn about it at `now`: each file
/// is warned of once, however many servers or services use it.
pub fn record(
    served: &mut Vec<Validity>,
    path: &Path,
    chain: &[CertificateDer<'_>],
    now: SystemTime,
) -> Option<String> {
    if served.iter().any(|v| v.path == path) {
        return None;
    }
    let v = Validity::of(path, chain)?;
    let warning = v.warning(now);
    served.push(v);
    warning
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `in 3 days`, `in 1 day`, `in less than a day` (`prefix` before the count).
fn days(seconds: i64, prefix: &str) -> String {
    match seconds / DAY as i64 {
        0 => format!("{prefix}less than a day"),
        1 => format!("{prefix}1 day"),
        n => format!("{prefix}{n} days"),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: String,
}

/// The certificate files a daemon serves now: exported as
/// `certificate_expiry_timestamp_seconds{file}` in the daemon's registry and reminded of
/// once a day. [`Served::set`] at start and after every reload.
#[derive(Clone, Debug, Default)]
pub struct Served {
    gauge: Family<FileLabel, Gauge>,
    current: Arc<Mutex<Vec<Validity>>>,
}

impl Served {
    /// Registers the family in `registry` (a daemon's prefixed sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let served = Self::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each served certificate file stops being valid (the earliest notAfter in \
             it), in Unix seconds",
            served.gauge.clone(),
        );
        served
    }

    /// From now on exactly `certificates`: a file a reload no longer serves leaves the
    /// metric.
    pub fn set(&self, certificates: Vec<Validity>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let kept: HashSet<&Path> = certificates.iter().map(|v| v.path.as_path()).collect();
        for old in current.iter().filter(|v| !kept.contains(v.path.as_path())) {
            self.gauge.remove(&label(&old.path));
        }
        for v in &certificates {
            self.gauge.get_or_create(&label(&v.path)).set(v.not_after);
        }
        *current = certificates;
    }

    /// The files served now.
    pub fn list(&self) -> Vec<Validity> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Logs the warnings of the files served then, every [`REMIND_EVERY`], until `stop`.
    pub fn spawn_reminders(&self, stop: CancellationToken) {
        let served = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = served.remind(|w| tracing::warn!("{w}")) => {}
            }
        });
    }

    async fn remind(&self, mut say: impl FnMut(String)) {
        loop {
            tokio::time::sleep(REMIND_EVERY).await;
            let now = SystemTime::now();
            for w in self.list().iter().filter_map(|v| v.warning(now)) {
                say(w);
            }
        }
    }
}

fn label(path: &Path) -> FileLabel {
    FileLabel {
        file: path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid from `from` to `to` seconds after now.
    fn cert(from: i64, to: i64) -> CertificateDer<'static> {
        let at = |s: i64| {
            rcgen::date_time_ymd(1970, 1, 1)
                + Duration::from_secs((unix(SystemTime::now()) + s) as u64)
        };
        let mut params =
            rcgen::CertificateParams::new(vec!["lb.example.org".to_owned()]).expect("params");
        params.not_before = at(from);
        params.not_after = at(to);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().clone()
    }

    fn validity(from: i64, to: i64) -> Validity {
        Validity::of(Path::new("/etc/certs/httpd.crt"), &[cert(from, to)]).expect("parses")
    }

    const D: i64 = DAY as i64;

    #[test]
    fn a_certificate_far_from_its_end_says_nothing_and_one_near_it_says_when() {
        let now = SystemTime::now();
        assert_eq!(validity(-D, 31 * D + 60).warning(now), None);
        let w = validity(-D, 10 * D + 60)
            .warning(now)
            .expect("within 30 days");
        assert!(
            w.starts_with(
                "certificate /etc/certs/httpd.crt (CN=rcgen self signed cert) expires on "
            ) && w.ends_with(", in 10 days: renew it on its key and reload"),
            "{w}"
        );
        let w = validity(-D, 3600).warning(now).expect("today");
        assert!(w.contains("in less than a day"), "{w}");
    }

    #[test]
    fn an_expired_or_not_yet_valid_certificate_says_so() {
        let now = SystemTime::now();
        let w = validity(-30 * D, -2 * D - 60)
            .warning(now)
            .expect("expired");
        assert!(
            w.contains(" expired on ") && w.contains(", 2 days ago: clients that check dates"),
            "{w}"
        );
        let w = validity(D + 60, 400 * D).warning(now).expect("not yet");
        assert!(w.contains("is not valid yet (it starts in 1 day)"), "{w}");
    }

    #[test]
    fn a_chain_is_as_valid_as_its_first_certificate_to_end() {
        let leaf = cert(-D, 300 * D);
        let intermediate = cert(-D, 20 * D + 60);
        let v = Validity::of(Path::new("chain.pem"), &[leaf.clone(), intermediate]).expect("v");
        let w = v.warning(SystemTime::now()).expect("20 days");
        assert!(w.contains("in 20 days"), "{w}");
        let alone = Validity::of(Path::new("chain.pem"), &[leaf]).expect("v");
        assert!(v.not_after < alone.not_after);
        assert_eq!(
            Validity::of(Path::new("x"), &[CertificateDer::from(vec![1, 2, 3])]),
            None
        );
    }

    #[test]
    fn a_file_two_servers_use_is_recorded_and_warned_of_once() {
        let (near, far) = (cert(-D, 5 * D), cert(-D, 300 * D));
        let now = SystemTime::now();
        let mut served = Vec::new();
        let a = Path::new("/etc/certs/httpd.crt");
        let b = Path::new("/etc/stunnel/cert.pem");
        assert!(record(&mut served, a, std::slice::from_ref(&near), now).is_some());
        assert_eq!(record(&mut served, a, &[near], now), None, "once per file");
        assert_eq!(
            record(&mut served, b, &[far], now),
            None,
            "far from its end"
        );
        let paths: Vec<_> = served.iter().map(|v| v.path.as_path()).collect();
        assert_eq!(paths, [a, b]);
    }

    #[test]
    fn the_metric_holds_exactly_the_files_served_now() {
        let mut registry = Registry::default();
        let served = Served::register(registry.sub_registry_with_prefix("gluu_lb"));
        let text = |r: &Registry| {
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, r).expect("encode");
            s
        };
        let a = validity(-D, 10 * D);
        let mut b = validity(-D, 100 * D);
        b.path = PathBuf::from("/etc/stunnel/cert.pem");
        served.set(vec![a.clone(), b.clone()]);
        let t = text(&registry);
        for v in [&a, &b] {
            let line = format!(
                "gluu_lb_certificate_expiry_timestamp_seconds{{file=\"{}\"}} {}",
                v.path.display(),
                v.not_after
            );
            assert!(t.contains(&line), "{line} in\n{t}");
        }
        served.set(vec![b.clone()]);
        let t = text(&registry);
        assert!(!t.contains("httpd.crt"), "{t}");
        assert!(t.contains("/etc/stunnel/cert.pem"), "{t}");
        assert_eq!(served.list(), vec![b]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_daemon_says_it_again_every_day() {
        let served = Served::default();
        served.set(vec![validity(-D, 10 * D), validity(-D, 200 * D)]);
        let said = Arc::new(Mutex::new(Vec::new()));
        let log = said.clone();
        let task =
            tokio::spawn(async move { served.remind(|w| log.lock().expect("lock").push(w)).await });
        tokio::time::sleep(REMIND_EVERY / 2).await;
        assert!(said.lock().expect("lock").is_empty(), "not before a day");
        tokio::time::sleep(REMIND_EVERY * 2).await;
        let said = said.lock().expect("lock").clone();
        assert_eq!(said.len(), 2, "once a day, the near one only: {said:?}");
        assert!(said[0].contains("expires on "), "{said:?}");
        task.abort();
    }
}
