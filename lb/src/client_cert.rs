//! Client certificates, as nginx asks for and judges them (`ssl_verify_client`,
//! `ssl_client_certificate`, `ssl_trusted_certificate`, `ssl_verify_depth`, `ssl_crl`), and the
//! `$ssl_client_*` variables that pass them on to the nodes (Gluu's oxAuth reads a client's
//! certificate for mutual-TLS client authentication, RFC 8705, from `X-ClientCert`).
//!
//! nginx asks for a certificate in the handshake but never fails the handshake over it:
//! OpenSSL's verdict is kept, and each request is refused or let through by it. gluu-lb does
//! the same: the handshake checks only that the client holds the key of the certificate it
//! sent ([`Asks`]); the chain is judged once per connection ([`Trust::judge`]), with
//! OpenSSL's rules and words, and [`refusal`] applies the server's mode to each request.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::fmt::Write as _;
use std::sync::Arc;

use data_encoding::{BASE64, HEXLOWER, HEXUPPER};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer, TrustAnchor, UnixTime};
use webpki::{CertRevocationList, RevocationCheckDepth, RevocationOptionsBuilder};
use x509_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::config::grammar::GrammarError;
use crate::config::tls::{ClientAuth, VerifyClient};

/// What one server trusts and asks of client certificates.
#[derive(Debug)]
pub struct Trust {
    /// The self-signed certificates of the CA files: where a chain must end, as OpenSSL
    /// has it (without its partial-chain flag, which nginx does not set).
    anchors: Vec<TrustAnchor<'static>>,
    /// The other certificates of the CA files: a chain may pass through them, but one
    /// that ends at one of them fails ("unable to get issuer certificate").
    store: Vec<CertificateDer<'static>>,
    /// The self-signed certificates of the CA files as they are: a client that presents
    /// one of them is trusted directly, whatever the certificate says it is for.
    trusted_self_signed: Vec<CertificateDer<'static>>,
    /// The subjects of `ssl_client_certificate`'s certificates, named to the client.
    hints: Vec<DistinguishedName>,
    depth: u32,
    /// `ssl_crl`'s lists, the latest issued first (OpenSSL takes an issuer's latest);
    /// `None` without `ssl_crl`, when nothing is checked for revocation.
    crls: Option<Vec<Crl>>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// A certificate revocation list, and its dates (Unix seconds), which webpki keeps to
/// itself.
#[derive(Debug)]
struct Crl {
    list: CertRevocationList<'static>,
    this_update: u64,
    next_update: Option<u64>,
}

impl Trust {
    /// The trust of a server whose settings are `c`; `None` when it asks for no
    /// certificate. Errors name the line: a CA file that does not load, or (nginx's
    /// words) `on`/`optional` without `ssl_client_certificate`.
    pub fn load(
        c: &ClientAuth,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Arc<Trust>>, GrammarError> {
        // nginx loads the file whether or not the server asks for certificates.
        let crls = c
            .crl
            .as_ref()
            .map(|(path, place)| crls(path).map_err(|e| GrammarError::at(place, e)))
            .transpose()?;
        let Some(place) = c
            .verify_place
            .as_ref()
            .filter(|_| c.verify != VerifyClient::Off)
        else {
            return Ok(None);
        };
        if c.certificate.is_none() && c.verify != VerifyClient::OptionalNoCa {
            return Err(GrammarError::at(
                place,
                "no ssl_client_certificate for ssl_verify_client",
            ));
        }
        let mut trust = Trust {
            anchors: Vec::new(),
            store: Vec::new(),
            trusted_self_signed: Vec::new(),
            hints: Vec::new(),
            depth: c.depth,
            crls,
            algorithms: provider.signature_verification_algorithms,
        };
        for (file, named) in [(&c.certificate, true), (&c.trusted, false)] {
            let Some((path, place)) = file else { continue };
            let certs = gluu_common::tls::load_certs(path)
                .map_err(|e| GrammarError::at(place, e.to_string()))?;
            for cert in certs {
                let parsed = parse(&cert).ok_or_else(|| {
                    GrammarError::at(
                        place,
                        format!("{}: a certificate is not X.509", path.display()),
                    )
                })?;
                if named {
                    trust
                        .hints
                        .push(DistinguishedName::from(parsed.subject().as_raw().to_vec()));
                }
                if self_signed(&parsed) {
                    let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|e| {
                        GrammarError::at(
                            place,
                            format!("{}: a CA certificate cannot be used: {e}", path.display()),
                        )
                    })?;
                    trust.anchors.push(anchor.to_owned());
                    trust.trusted_self_signed.push(cert.clone());
                } else {
                    trust.store.push(cert.clone());
                }
            }
        }
        Ok(Some(Arc::new(trust)))
    }

    /// The rustls verifier for a handshake with this server.
    pub fn asks(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Asks(self.clone()))
    }

    /// The verdict on the certificates a client sent (its own first), as OpenSSL gives
    /// it under nginx; `None` when it sent none.
    pub fn judge(&self, chain: &[CertificateDer<'_>]) -> Option<ClientCert> {
        let leaf = chain.first()?;
        let verified = if self.trusted_self_signed.iter().any(|t| t == leaf) {
            Ok(())
        } else {
            self.verify(leaf, &chain[1..])
        };
        let verdict = match verified {
            // webpki checked the CRLs of the certificates below the root; OpenSSL checks
            // the root's too, and the CRLs' dates.
            Ok(()) => match self.crls.as_ref().and_then(|_| self.crl_verdict(chain)) {
                Some(failure) => Verdict::Failed(failure),
                None => Verdict::Success,
            },
            Err(e) => Verdict::Failed(self.reason(&e, chain)),
        };
        Some(ClientCert {
            der: leaf.clone().into_owned(),
            verdict,
        })
    }

    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        sent: &[CertificateDer<'_>],
    ) -> Result<(), webpki::Error> {
        let ee = webpki::EndEntityCert::try_from(leaf)?;
        let intermediates: Vec<CertificateDer<'_>> =
            sent.iter().chain(&self.store).cloned().collect();
        let depth = self.depth as usize;
        let within_depth = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() > depth {
                Err(webpki::Error::MaximumPathDepthExceeded)
            } else {
                Ok(())
            }
        };
        let crls: Option<Vec<&CertRevocationList<'_>>> = self
            .crls
            .as_ref()
            .map(|c| c.iter().map(|c| &c.list).collect());
        // nginx sets OpenSSL's CRL_CHECK_ALL: every certificate of the chain needs its
        // issuer's CRL, and an expired CRL fails the chain.
        let revocation = crls.as_deref().map(|crls| {
            RevocationOptionsBuilder::new(crls)
                .expect("a CRL file holds at least one CRL (load_crls)")
                .with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                .build()
        });
        ee.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            &intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            revocation,
            Some(&within_depth),
        )
        .map(|_| ())
    }

    /// OpenSSL's error for a chain webpki refused with `e`.
    fn reason(&self, e: &webpki::Error, chain: &[CertificateDer<'_>]) -> Failure {
        use webpki::Error as E;
        match e {
            E::CertExpired { .. } => Failure::EXPIRED,
            E::CertNotValidYet { .. } => Failure::NOT_YET_VALID,
            E::InvalidSignatureForPublicKey => Failure::SIGNATURE,
            E::EndEntityUsedAsCa => Failure::INVALID_CA,
            // OpenSSL looks at the purpose only once the chain is built: when it does not
            // reach a trusted CA, that is the error.
            E::RequiredEkuNotFoundContext(_) | E::CaUsedAsEndEntity => {
                self.by_names(chain, Failure::PURPOSE)
            }
            // webpki takes no certificate of version 1, where OpenSSL does. When the chain
            // would not reach a trusted CA anyway, OpenSSL's verdict is known by the
            // names; otherwise it is refused.
            E::UnsupportedCertVersion => self.by_names(chain, Failure::VERSION_1),
            E::PathLenConstraintViolated => Failure::PATH_LENGTH,
            // webpki stops at the first CRL error, and before the depth is checked; the
            // names tell OpenSSL's last.
            E::CertRevoked => self.by_names(chain, Failure::REVOKED),
            E::UnknownRevocationStatus => self.by_names(chain, Failure::NO_CRL),
            E::CrlExpired { .. } => self.by_names(chain, Failure::CRL_EXPIRED),
            E::InvalidCrlSignatureForPublicKey
            | E::UnsupportedCrlSignatureAlgorithmContext(_)
            | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
                self.by_names(chain, Failure::CRL_SIGNATURE)
            }
            E::IssuerNotCrlSigner => self.by_names(chain, Failure::NO_CRL_SIGN),
            E::UnknownIssuer | E::MaximumPathDepthExceeded => {
                self.by_names(chain, Failure::SIGNATURE)
            }
            _ => Failure::UNSPECIFIED,
        }
    }

    /// OpenSSL's last error for a chain judged by its names; `trusted` when the chain
    /// reaches a trusted CA. nginx lets OpenSSL go on after each error, and the last one
    /// is the verdict: that of building the chain, then of its purpose, then of its CRLs,
    /// then of its signatures.
    fn by_names(&self, chain: &[CertificateDer<'_>], trusted: Failure) -> Failure {
        self.with_chain(chain, |ends, built| {
            let failure = if ends == Failure::SIGNATURE {
                trusted
            } else {
                ends
            };
            match failure {
                Failure::SIGNATURE | Failure::LEAF_NOT_VERIFIED => failure,
                _ => self.crl_by_names(built).unwrap_or(failure),
            }
        })
        .unwrap_or(Failure::UNSPECIFIED)
    }

    /// The CRL error OpenSSL gives a chain that verified, if any.
    fn crl_verdict(&self, chain: &[CertificateDer<'_>]) -> Option<Failure> {
        self.with_chain(chain, |_, built| self.crl_by_names(built))
            .unwrap_or(Some(Failure::UNSPECIFIED))
    }

    /// `f` of the chain OpenSSL builds from `chain` ([`Self::where_it_ends`]).
    fn with_chain<T>(
        &self,
        chain: &[CertificateDer<'_>],
        f: impl FnOnce(Failure, &[&X509Certificate<'_>]) -> T,
    ) -> Option<T> {
        let sent: Vec<X509Certificate<'_>> = chain.iter().filter_map(|c| parse(c)).collect();
        let store: Vec<X509Certificate<'_>> = self.store.iter().filter_map(|c| parse(c)).collect();
        let roots: Vec<X509Certificate<'_>> = self
            .trusted_self_signed
            .iter()
            .filter_map(|c| parse(c))
            .collect();
        let (ends, built) = self.where_it_ends(&sent, &store, &roots)?;
        Some(f(ends, &built))
    }

    /// Which issuer error OpenSSL gives: it builds the chain by names, from the trusted
    /// certificates first, then from those the client sent, at most `depth` of the
    /// latter (and a self-signed one past them), and names where the chain stopped
    /// (`SIGNATURE` when it reached a trusted CA, and yet failed); with the chain built.
    fn where_it_ends<'c>(
        &self,
        sent: &'c [X509Certificate<'c>],
        store: &'c [X509Certificate<'c>],
        roots: &'c [X509Certificate<'c>],
    ) -> Option<(Failure, Vec<&'c X509Certificate<'c>>)> {
        let mut at = sent.first()?;
        let mut built = vec![at];
        let mut used = vec![false; sent.len()];
        used[0] = true;
        let mut cas = 0;
        loop {
            let is_leaf = std::ptr::eq(at, &sent[0]);
            if self_signed(at) {
                let failure = if is_leaf {
                    Failure::SELF_SIGNED
                } else {
                    Failure::SELF_SIGNED_IN_CHAIN
                };
                return Some((failure, built));
            }
            let issuer = at.issuer().as_raw();
            if let Some(root) = roots.iter().find(|r| r.subject().as_raw() == issuer) {
                built.push(root);
                return Some((Failure::SIGNATURE, built));
            }
            if let Some(s) = store.iter().find(|s| s.subject().as_raw() == issuer) {
                built.push(s);
                return Some((Failure::NO_ISSUER, built));
            }
            let next = sent
                .iter()
                .enumerate()
                .find(|(i, c)| !used[*i] && c.subject().as_raw() == issuer);
            match next {
                // Beyond the depth OpenSSL still takes a self-signed one (and names it).
                Some((i, c)) if cas < self.depth || self_signed(c) => {
                    used[i] = true;
                    cas += 1;
                    at = c;
                    built.push(c);
                }
                _ if is_leaf => return Some((Failure::LEAF_NOT_VERIFIED, built)),
                _ => return Some((Failure::NO_LOCAL_ISSUER, built)),
            }
        }
    }

    /// The CRL error OpenSSL gives a chain built by names (with `ssl_crl`): each
    /// certificate, its own first and the root last, needs a CRL of its issuer, whose
    /// certificate must be at hand to check it, in its dates, and must not be listed in
    /// it; the last error is the one kept.
    fn crl_by_names(&self, built: &[&X509Certificate<'_>]) -> Option<Failure> {
        let crls = self.crls.as_ref()?;
        let now = UnixTime::now().as_secs();
        let mut last = None;
        for (k, cert) in built.iter().enumerate() {
            let issuer_at_hand = k + 1 < built.len() || self_signed(cert);
            let crl = crls
                .iter()
                .find(|crl| same_name(crl.list.issuer(), cert.issuer().as_raw()));
            let Some(crl) = crl.filter(|_| issuer_at_hand) else {
                last = Some(Failure::NO_CRL);
                continue;
            };
            if crl.this_update > now {
                last = Some(Failure::CRL_NOT_YET_VALID);
            } else if crl.next_update.is_some_and(|next| next < now) {
                last = Some(Failure::CRL_EXPIRED);
            }
            if matches!(crl.list.find_serial(cert.raw_serial()), Ok(Some(_))) {
                last = Some(Failure::REVOKED);
            }
        }
        last
    }
}

/// `ssl_crl`'s file: its CRLs, the latest issued first.
fn crls(path: &std::path::Path) -> Result<Vec<Crl>, String> {
    let ders = gluu_common::tls::load_crls(path).map_err(|e| e.to_string())?;
    let unusable =
        |e: &dyn std::fmt::Display| format!("{}: a CRL cannot be used: {e}", path.display());
    // Dates before 1970 count as 1970.
    let secs = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    let mut crls = ders
        .iter()
        .map(|der| {
            let (_, parsed) = CertificateRevocationList::from_der(der).map_err(|e| unusable(&e))?;
            let list = webpki::OwnedCertRevocationList::from_der(der).map_err(|e| unusable(&e))?;
            Ok(Crl {
                list: list.into(),
                this_update: secs(parsed.last_update()),
                next_update: parsed.next_update().map(secs),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    crls.sort_by_key(|c| Reverse(c.this_update));
    Ok(crls)
}

/// Whether a Name's content as webpki keeps it (without its SEQUENCE header: a CRL's
/// issuer) is the DER Name `name`.
fn same_name(content: &[u8], name: &[u8]) -> bool {
    DistinguishedName::in_sequence(content).as_ref() == name
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Option<X509Certificate<'a>> {
    X509Certificate::from_der(der.as_ref()).ok().map(|(_, c)| c)
}

fn self_signed(c: &X509Certificate<'_>) -> bool {
    c.subject().as_raw() == c.issuer().as_raw()
}

/// An OpenSSL verification error: its number and its words (OpenSSL 3's, which
/// `$ssl_client_verify` and nginx's log line show).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub text: &'static str,
}

impl Failure {
    const UNSPECIFIED: Failure = Failure {
        code: 1,
        text: "unspecified certificate verification error",
    };
    const NO_ISSUER: Failure = Failure {
        code: 2,
        text: "unable to get issuer certificate",
    };
    const NO_CRL: Failure = Failure {
        code: 3,
        text: "unable to get certificate CRL",
    };
    const SIGNATURE: Failure = Failure {
        code: 7,
        text: "certificate signature failure",
    };
    const CRL_SIGNATURE: Failure = Failure {
        code: 8,
        text: "CRL signature failure",
    };
    const NOT_YET_VALID: Failure = Failure {
        code: 9,
        text: "certificate is not yet valid",
    };
    const EXPIRED: Failure = Failure {
        code: 10,
        text: "certificate has expired",
    };
    const CRL_NOT_YET_VALID: Failure = Failure {
        code: 11,
        text: "CRL is not yet valid",
    };
    const CRL_EXPIRED: Failure = Failure {
        code: 12,
        text: "CRL has expired",
    };
    const SELF_SIGNED: Failure = Failure {
        code: 18,
        text: "self-signed certificate",
    };
    const SELF_SIGNED_IN_CHAIN: Failure = Failure {
        code: 19,
        text: "self-signed certificate in certificate chain",
    };
    const NO_LOCAL_ISSUER: Failure = Failure {
        code: 20,
        text: "unable to get local issuer certificate",
    };
    const LEAF_NOT_VERIFIED: Failure = Failure {
        code: 21,
        text: "unable to verify the first certificate",
    };
    const REVOKED: Failure = Failure {
        code: 23,
        text: "certificate revoked",
    };
    const INVALID_CA: Failure = Failure {
        code: 24,
        text: "invalid CA certificate",
    };
    const PATH_LENGTH: Failure = Failure {
        code: 25,
        text: "path length constraint exceeded",
    };
    /// Not OpenSSL's: gluu-lb verifies no chain from a version 1 certificate.
    const VERSION_1: Failure = Failure {
        code: 1,
        text: "unsupported certificate version (1): reissue it as version 3",
    };
    const PURPOSE: Failure = Failure {
        code: 26,
        text: "unsuitable certificate purpose",
    };
    const NO_CRL_SIGN: Failure = Failure {
        code: 35,
        text: "key usage does not include CRL signing",
    };

    /// The errors `optional_no_ca` lets through (nginx's `ngx_ssl_verify_error_optional`):
    /// those that say only that the chain does not reach a trusted CA.
    fn optional(self) -> bool {
        matches!(self.code, 2 | 18 | 19 | 20 | 21)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failed(Failure),
}

/// The certificate a client sent on a connection, and the verdict on it.
#[derive(Debug)]
pub struct ClientCert {
    der: CertificateDer<'static>,
    pub verdict: Verdict,
}

/// Why a request is refused for its connection's certificate: nginx's 495 ("The SSL
/// certificate error") or 496 ("No required SSL certificate was sent"), both answered as
/// 400, and the line for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub text: &'static str,
    pub log: String,
}

/// Whether a server in `mode` refuses a request on a connection whose certificate is
/// `cert`, as nginx decides before anything else the server does.
pub fn refusal(mode: VerifyClient, cert: Option<&ClientCert>) -> Option<Refusal> {
    match (mode, cert.map(|c| c.verdict)) {
        (VerifyClient::Off, _) | (_, Some(Verdict::Success)) => None,
        (VerifyClient::OptionalNoCa, Some(Verdict::Failed(f))) if f.optional() => None,
        (_, Some(Verdict::Failed(f))) => Some(Refusal {
            code: 495,
            text: "The SSL certificate error",
            log: format!(
                "client SSL certificate verify error: ({}:{})",
                f.code, f.text
            ),
        }),
        (VerifyClient::On, None) => Some(Refusal {
            code: 496,
            text: "No required SSL certificate was sent",
            log: "client sent no required SSL certificate".to_owned(),
        }),
        (_, None) => None,
    }
}

/// The `$ssl_client_*` variables gluu-lb fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertVar {
    /// `SUCCESS`, `FAILED:reason` or `NONE`.
    Verify,
    /// PEM, each line after the first begun with a tab (nginx's value for a header folded
    /// over lines).
    Cert,
    /// PEM as it is.
    RawCert,
    /// PEM, URL-encoded.
    EscapedCert,
    /// The subject, RFC 2253.
    SubjectDn,
    /// The issuer, RFC 2253.
    IssuerDn,
    /// The serial number, in upper-case hex.
    Serial,
    /// The SHA-1 of the certificate, in lower-case hex.
    Fingerprint,
    /// The start of its validity, as OpenSSL prints a time (`Jan  1 00:00:00 2026 GMT`).
    ValidFrom,
    /// The end of its validity, likewise.
    ValidUntil,
    /// The whole days of validity left; `0` on its last day and after.
    DaysLeft,
}

impl CertVar {
    pub const ALL: &[(&str, CertVar)] = &[
        ("ssl_client_verify", CertVar::Verify),
        ("ssl_client_cert", CertVar::Cert),
        ("ssl_client_raw_cert", CertVar::RawCert),
        ("ssl_client_escaped_cert", CertVar::EscapedCert),
        ("ssl_client_s_dn", CertVar::SubjectDn),
        ("ssl_client_i_dn", CertVar::IssuerDn),
        ("ssl_client_serial", CertVar::Serial),
        ("ssl_client_fingerprint", CertVar::Fingerprint),
        ("ssl_client_v_start", CertVar::ValidFrom),
        ("ssl_client_v_end", CertVar::ValidUntil),
        ("ssl_client_v_remain", CertVar::DaysLeft),
    ];

    pub fn named(name: &str) -> Option<CertVar> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The value for a connection whose certificate is `cert`: empty without one, except
    /// `$ssl_client_verify` (`NONE`).
    pub fn value(self, cert: Option<&ClientCert>) -> Cow<'static, str> {
        let Some(c) = cert else {
            return Cow::Borrowed(if self == CertVar::Verify { "NONE" } else { "" });
        };
        let parsed = || parse(&c.der);
        Cow::Owned(match self {
            CertVar::Verify => match c.verdict {
                Verdict::Success => return Cow::Borrowed("SUCCESS"),
                Verdict::Failed(f) => format!("FAILED:{}", f.text),
            },
            CertVar::RawCert => pem(&c.der),
            CertVar::Cert => {
                let raw = pem(&c.der);
                raw.trim_end_matches('\n').replace('\n', "\n\t")
            }
            CertVar::EscapedCert => escape_component(&pem(&c.der)),
            CertVar::SubjectDn => parsed().map_or_else(String::new, |p| rfc2253(p.subject())),
            CertVar::IssuerDn => parsed().map_or_else(String::new, |p| rfc2253(p.issuer())),
            CertVar::Serial => parsed().map_or_else(String::new, |p| serial(p.raw_serial())),
            CertVar::Fingerprint => {
                let digest = aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    c.der.as_ref(),
                );
                HEXLOWER.encode(digest.as_ref())
            }
            CertVar::ValidFrom => {
                parsed().map_or_else(String::new, |p| openssl_time(p.validity().not_before))
            }
            CertVar::ValidUntil => {
                parsed().map_or_else(String::new, |p| openssl_time(p.validity().not_after))
            }
            CertVar::DaysLeft => parsed().map_or_else(String::new, |p| {
                let now = i64::try_from(UnixTime::now().as_secs()).unwrap_or(i64::MAX);
                days_left(p.validity().not_after.timestamp(), now).to_string()
            }),
        })
    }
}

/// A time as OpenSSL's `ASN1_TIME_print` writes a certificate's (always UTC).
fn openssl_time(t: x509_parser::time::ASN1Time) -> String {
    let t = t.to_datetime();
    let month = t.month().to_string();
    format!(
        "{} {:2} {:02}:{:02}:{:02} {} GMT",
        &month[..3],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// nginx's `$ssl_client_v_remain`: whole days from `now` to `end` (Unix seconds), 0 when
/// less than one is left.
fn days_left(end: i64, now: i64) -> i64 {
    if end < now.saturating_add(86_400) {
        0
    } else {
        (end - now) / 86_400
    }
}

/// The certificate as `PEM_write_bio_X509` writes it: 64 characters a line.
fn pem(der: &CertificateDer<'_>) -> String {
    let b64 = BASE64.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// nginx's `ngx_escape_uri(..., NGX_ESCAPE_URI_COMPONENT)`: all but letters, digits and
/// `-._~` as `%XX`.
fn escape_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A serial number as OpenSSL's `i2a_ASN1_INTEGER` prints it: upper-case hex of its
/// value (no sign padding), `-` before a negative one.
fn serial(raw: &[u8]) -> String {
    let negative = raw.first().is_some_and(|b| b & 0x80 != 0);
    let magnitude: Vec<u8> = if negative {
        // Two's complement: invert and add one.
        let mut m: Vec<u8> = raw.iter().map(|b| !b).collect();
        for b in m.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
        m
    } else {
        raw.to_vec()
    };
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len().saturating_sub(1));
    let digits = HEXUPPER.encode(&magnitude[start.min(magnitude.len())..]);
    let digits = if digits.is_empty() {
        "00".to_owned()
    } else {
        digits
    };
    if negative {
        format!("-{digits}")
    } else {
        digits
    }
}

/// OpenSSL's short names for the attributes of a name (others are printed by their OID).
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.13", "description"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.41", "name"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.97", "organizationIdentifier"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("1.3.6.1.4.1.311.60.2.1.1", "jurisdictionL"),
    ("1.3.6.1.4.1.311.60.2.1.2", "jurisdictionST"),
    ("1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC"),
];

/// A name as OpenSSL prints it with `XN_FLAG_RFC2253` (nginx's `$ssl_client_s_dn`): the
/// last attribute first, `,` between them (`+` within a multi-valued one), values in
/// UTF-8 with RFC 2253's specials and every byte outside printable ASCII escaped, and an
/// attribute OpenSSL has no name for as its OID and `#` with its DER in hex.
fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    let mut first = true;
    for rdn in rdns.iter().rev() {
        let attrs: Vec<_> = rdn.iter().collect();
        for (i, attr) in attrs.iter().rev().enumerate() {
            if !first {
                out.push(if i > 0 { '+' } else { ',' });
            }
            first = false;
            let oid = attr.attr_type().to_id_string();
            match SHORT_NAMES.iter().find(|(o, _)| *o == oid) {
                Some((_, short)) => {
                    out.push_str(short);
                    out.push('=');
                    out.push_str(&dn_value(attr.attr_value()));
                }
                None => {
                    out.push_str(&oid);
                    out.push_str("=#");
                    out.push_str(
                        &HEXUPPER.encode(&attr.attr_value().to_der_vec().unwrap_or_default()),
                    );
                }
            }
        }
    }
    out
}

/// One value of a name, with `ASN1_STRFLGS_RFC2253`'s escapes.
fn dn_value(value: &Any<'_>) -> String {
    let text: String = match value.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = value
                .data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => value
            .data
            .chunks(4)
            .filter_map(|c| {
                let b: [u8; 4] = c.try_into().ok()?;
                char::from_u32(u32::from_be_bytes(b))
            })
            .collect(),
        Tag::Utf8String => String::from_utf8_lossy(value.data).into_owned(),
        Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::T61String => value.data.iter().map(|b| char::from(*b)).collect(),
        _ => {
            return format!(
                "#{}",
                HEXUPPER.encode(&value.to_der_vec().unwrap_or_default())
            );
        }
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let edge = (i == 0 && (b == b'#' || b == b' ')) || (i + 1 == bytes.len() && b == b' ');
        if !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\{b:02X}");
        } else if edge || b",+\"\\<>;".contains(&b) {
            out.push('\\');
            out.push(char::from(b));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The key of `cert`, read by x509-parser: webpki reads no version 1 certificate, which
/// OpenSSL takes and tutorials' `openssl x509 -req` makes.
fn spki(cert: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    let parsed = parse(cert).ok_or_else(bad_certificate)?;
    Ok(SubjectPublicKeyInfoDer::from(
        parsed.public_key().raw.to_vec(),
    ))
}

fn bad_certificate() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

/// The handshake's side: a certificate is asked for (naming `ssl_client_certificate`'s
/// CAs), never required, and the client must prove it holds the certificate's key; the
/// chain is judged after the handshake ([`Trust::judge`]), as nginx lets OpenSSL accept
/// every chain in the handshake and judges each request by the verdict.
#[derive(Debug)]
struct Asks(Arc<Trust>);

impl ClientCertVerifier for Asks {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.0.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let spki = spki(cert)?;
        let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| bad_certificate())?;
        let algorithms = self
            .0
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map_or(&[][..], |(_, algs)| *algs);
        if algorithms
            .iter()
            .any(|alg| key.verify_signature(*alg, message, dss.signature()).is_ok())
        {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature,
            ))
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &spki(cert)?,
            dss,
            &self.0.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_as_openssl_prints_them() {
        assert_eq!(serial(&[0x00, 0xA1, 0xB2]), "A1B2");
        assert_eq!(serial(&[0x01]), "01");
        assert_eq!(serial(&[0x00]), "00");
        assert_eq!(serial(&[0xFF]), "-01");
        assert_eq!(serial(&[0xFF, 0x00]), "-0100");
    }

    #[test]
    fn a_pem_is_escaped_as_a_uri_component() {
        assert_eq!(
            escape_component("-----BEGIN CERTIFICATE-----\nab+/=~_.\n"),
            "-----BEGIN%20CERTIFICATE-----%0Aab%2B%2F%3D~_.%0A"
        );
    }

    #[test]
    fn a_name_value_escapes_rfc_2253s_specials_and_what_is_not_printable() {
        let utf8 = |s: &str| {
            let der = x509_parser::asn1_rs::Utf8String::new(s)
                .to_der_vec()
                .expect("der");
            dn_value(&Any::from_der(&der).expect("any").1)
        };
        use x509_parser::asn1_rs::FromDer as _;
        assert_eq!(utf8("#a, b "), "\\#a\\, b\\ ");
        assert_eq!(utf8(" x=\"y\"+<z>;"), "\\ x=\\\"y\\\"\\+\\<z\\>\\;");
        assert_eq!(utf8("é\t"), "\\C3\\A9\\09");
    }

    #[test]
    fn validity_is_printed_and_counted_as_nginx_does() {
        let at = |s: &str| {
            x509_parser::time::ASN1Time::from_timestamp(
                httpdate::parse_http_date(s)
                    .expect("date")
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs()
                    .try_into()
                    .expect("fits"),
            )
            .expect("time")
        };
        assert_eq!(
            openssl_time(at("Wed, 01 Jan 2020 00:00:00 GMT")),
            "Jan  1 00:00:00 2020 GMT"
        );
        assert_eq!(
            openssl_time(at("Fri, 31 Dec 2049 23:59:59 GMT")),
            "Dec 31 23:59:59 2049 GMT"
        );
        let day = 86_400;
        assert_eq!(days_left(1000 + day - 1, 1000), 0);
        assert_eq!(days_left(1000 + day, 1000), 1);
        assert_eq!(days_left(1000 + 3 * day - 1, 1000), 2);
        assert_eq!(days_left(500, 1000), 0);
    }

    #[test]
    fn a_request_is_refused_as_the_mode_says() {
        let cert = |verdict| ClientCert {
            der: CertificateDer::from(vec![0]),
            verdict,
        };
        let good = cert(Verdict::Success);
        let untrusted = cert(Verdict::Failed(Failure::LEAF_NOT_VERIFIED));
        let expired = cert(Verdict::Failed(Failure::EXPIRED));
        let code = |mode, c: Option<&ClientCert>| refusal(mode, c).map(|r| r.code);
        use VerifyClient::*;
        for mode in [Off, On, Optional, OptionalNoCa] {
            assert_eq!(code(mode, Some(&good)), None, "{mode:?}");
        }
        assert_eq!(code(Off, Some(&expired)), None);
        assert_eq!(code(On, None), Some(496));
        assert_eq!(code(Optional, None), None);
        assert_eq!(code(OptionalNoCa, None), None);
        assert_eq!(code(On, Some(&untrusted)), Some(495));
        assert_eq!(code(Optional, Some(&untrusted)), Some(495));
        assert_eq!(code(OptionalNoCa, Some(&untrusted)), None);
        assert_eq!(code(OptionalNoCa, Some(&expired)), Some(495));
        assert_eq!(
            CertVar::Verify.value(Some(&untrusted)),
            "FAILED:unable to verify the first certificate"
        );
        assert_eq!(CertVar::Verify.value(None), "NONE");
        assert_eq!(CertVar::SubjectDn.value(None), "");
    }
}
