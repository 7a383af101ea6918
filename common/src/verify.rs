//! Who a daemon accepts on the other end of a TLS connection.
//!
//! The guide verifies nobody. Our default is to pin the peer to the key of the certificate we
//! hold ourselves (one `secureredis.pem` on every tunnel host, one `httpd.crt` on the
//! balancer and the nodes), so a stolen port or a rogue host gets nothing, and a certificate
//! renewed with its key keeps working; explicit settings select chain
//! verification against a CA file, a set of pinned certificates, or (loudly) anyone.
//! One [`PeerVerifier`] serves both sides: it is rustls' server-certificate verifier on the
//! client side and its client-certificate verifier on the server side.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::fingerprint;

/// What a peer must present.
#[derive(Clone)]
pub enum PeerPolicy {
    /// A certificate for the same key as `cert` (our default: `cert` is the certificate we
    /// hold ourselves). The key is what the peer proves it holds in the handshake, so a
    /// certificate renewed with the same key (`openssl req -new -x509 -key KEY ...`, as the
    /// guide makes stunnel's) can reach the hosts one by one without any two refusing each
    /// other on the way; dates are not looked at.
    /// Several: a certificate for the key of any one of them (gluu-lb serving an RSA and
    /// an ECDSA certificate).
    SameKey {
        /// Each certificate with its DER SubjectPublicKeyInfo.
        keys: Vec<(CertificateDer<'static>, Vec<u8>)>,
    },
    /// Exactly one of these end-entity certificates, byte for byte (stunnel's `verifyPeer`
    /// with a `CAfile` of peers).
    Pinned(Vec<CertificateDer<'static>>),
    /// A chain to one of these roots. With `names` empty the name is not checked (stunnel's
    /// `verifyChain` without `checkHost`); otherwise the certificate must be valid for one.
    Chain {
        roots: Arc<rustls::RootCertStore>,
        names: Vec<ServerName<'static>>,
        /// At most this many intermediate CA certificates between the peer's own and a
        /// root (OpenSSL's verify depth: nginx's `proxy_ssl_verify_depth`); `None`: only
        /// webpki's own bound.
        depth: Option<usize>,
        /// Revocation lists: with any, every certificate of the chain below the root must
        /// be covered by a current list of its issuer and not listed in it (nginx's
        /// `proxy_ssl_crl`, which sets OpenSSL's `CRL_CHECK_ALL`); empty: not checked.
        crls: Vec<CertificateRevocationListDer<'static>>,
    },
    /// Some certificate, not verified (stunnel's `requireCert = yes` alone).
    AnyCertificate,
    /// Nobody is checked: stunnel's behaviour with no verification at all.
    Anyone,
}

/// The DER SubjectPublicKeyInfo of a certificate, `None` when it is not X.509.
fn spki_of(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    Some(parsed.public_key().raw.to_vec())
}

impl PeerPolicy {
    /// [`PeerPolicy::SameKey`] as `cert`; `None` when `cert` cannot be read as X.509.
    pub fn same_key_as(cert: CertificateDer<'static>) -> Option<PeerPolicy> {
        Self::same_key_as_any([cert])
    }

    /// [`PeerPolicy::SameKey`] as any of `certs`; `None` when one cannot be read as X.509.
    pub fn same_key_as_any(
        certs: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Option<PeerPolicy> {
        let keys = certs
            .into_iter()
            .map(|cert| spki_of(cert.as_ref()).map(|spki| (cert, spki)))
            .collect::<Option<Vec<_>>>()?;
        Some(PeerPolicy::SameKey { keys })
    }

    /// One line for logs: what this side checks.
    pub fn describe(&self) -> String {
        match self {
            PeerPolicy::SameKey { keys } => {
                let prints: Vec<_> = keys.iter().map(|(cert, _)| fingerprint(cert)).collect();
                format!(
                    "pinned to the key of certificate sha256 {}",
                    prints.join(" or ")
                )
            }
            PeerPolicy::Pinned(certs) => {
                let prints: Vec<_> = certs.iter().map(fingerprint).collect();
                format!("pinned to certificate sha256 {}", prints.join(" or "))
            }
            PeerPolicy::Chain {
                names, depth, crls, ..
            } => {
                let mut text = "chain verified against the CA file".to_owned();
                if let Some(depth) = depth {
                    text += &format!(" through at most {depth} intermediate CAs");
                }
                if !crls.is_empty() {
                    text += ", revocation checked";
                }
                if names.is_empty() {
                    text += " (names not checked)";
                } else {
                    let names: Vec<_> = names.iter().map(|n| n.to_str().into_owned()).collect();
                    text += &format!(", name one of {}", names.join(", "));
                }
                text
            }
            PeerPolicy::AnyCertificate => "any certificate (not verified)".to_owned(),
            PeerPolicy::Anyone => "NO VERIFICATION: anyone is accepted".to_owned(),
        }
    }
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why a peer's certificate was refused, carried inside rustls' error so the log line that
/// reports a failed handshake can say it.
#[derive(Debug)]
struct NotPinned {
    presented: String,
    /// What was pinned: `the pinned one`, or `whose key is not the pinned one`.
    what: &'static str,
}

impl fmt::Display for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer presented certificate sha256 {} {}",
            self.presented, self.what
        )
    }
}

impl std::error::Error for NotPinned {}

/// A chain that verified only through more intermediates than the verify depth allows.
#[derive(Debug)]
struct TooDeep(usize);

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate chain too long: it reaches a trusted CA only through more than {} \
             intermediate CA certificates (the verify depth)",
            self.0
        )
    }
}

impl std::error::Error for TooDeep {}

/// rustls verifier for both directions; build with [`PeerVerifier::new`].
#[derive(Debug)]
pub struct PeerVerifier {
    policy: PeerPolicy,
    algorithms: WebPkiSupportedAlgorithms,
    server_chain: Option<Arc<WebPkiServerVerifier>>,
    client_chain: Option<Arc<dyn ClientCertVerifier>>,
}

impl PeerVerifier {
    pub fn new(policy: PeerPolicy, provider: &Arc<CryptoProvider>) -> Result<Self, Error> {
        let (server_chain, client_chain) = match &policy {
            PeerPolicy::Chain { roots, crls, .. } => {
                let mut server =
                    WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone());
                let mut client =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                if !crls.is_empty() {
                    // The builders' defaults check the whole chain and fail a certificate
                    // whose issuer has no list here, as OpenSSL's CRL_CHECK_ALL does.
                    server = server
                        .with_crls(crls.iter().cloned())
                        .enforce_revocation_expiration();
                    client = client
                        .with_crls(crls.iter().cloned())
                        .enforce_revocation_expiration();
                }
                let server = server.build().map_err(|e| Error::General(e.to_string()))?;
                let client = client.build().map_err(|e| Error::General(e.to_string()))?;
                (Some(server), Some(client))
            }
            _ => (None, None),
        };
        Ok(Self {
            policy,
            algorithms: provider.signature_verification_algorithms,
            server_chain,
            client_chain,
        })
    }

    fn check_pin(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let refused = |what| {
            Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotPinned {
                    presented: fingerprint(end_entity),
                    what,
                })),
            )))
        };
        match &self.policy {
            PeerPolicy::SameKey { keys } => {
                let presented = spki_of(end_entity.as_ref());
                if keys
                    .iter()
                    .any(|(_, spki)| presented.as_ref() == Some(spki))
                {
                    Ok(())
                } else {
                    refused("whose key is not the pinned one")
                }
            }
            PeerPolicy::Pinned(pins) if !pins.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                refused("which is not the pinned one")
            }
            _ => Ok(()),
        }
    }

    /// With a depth, the chain must also reach a root through at most that many
    /// intermediates (`intermediates` being what the peer sent). Run after the chain
    /// verified, so a failure here is the depth's.
    fn check_depth(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: webpki::KeyUsage,
        now: UnixTime,
    ) -> Result<(), Error> {
        let PeerPolicy::Chain {
            roots,
            depth: Some(depth),
            ..
        } = &self.policy
        else {
            return Ok(());
        };
        let within = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() > *depth {
                Err(webpki::Error::MaximumPathDepthExceeded)
            } else {
                Ok(())
            }
        };
        webpki::EndEntityCert::try_from(end_entity)
            .and_then(|ee| {
                ee.verify_for_usage(
                    self.algorithms.all,
                    &roots.roots,
                    intermediates,
                    now,
                    usage,
                    None,
                    Some(&within),
                )
                .map(|_| ())
            })
            .map_err(|_| {
                Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                    TooDeep(*depth),
                ))))
            })
    }

    /// The certificate must be valid for one of `names` (client certificates, `checkHost`).
    fn check_names(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let PeerPolicy::Chain { names, .. } = &self.policy else {
            return Ok(());
        };
        if names.is_empty() {
            return Ok(());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
        })?;
        if names
            .iter()
            .any(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
        {
            Ok(())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match (&self.policy, &self.server_chain) {
            (PeerPolicy::Chain { names, .. }, Some(chain)) => {
                let verified = if names.is_empty() {
                    // stunnel's verifyChain checks the chain only; webpki always checks a
                    // name, so a name mismatch alone is not a failure here.
                    match chain.verify_server_cert(
                        end_entity,
                        intermediates,
                        server_name,
                        ocsp_response,
                        now,
                    ) {
                        Err(Error::InvalidCertificate(
                            CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. },
                        )) => Ok(ServerCertVerified::assertion()),
                        other => other,
                    }
                } else {
                    let mut last =
                        Err(Error::InvalidCertificate(CertificateError::NotValidForName));
                    for name in names {
                        last = chain.verify_server_cert(
                            end_entity,
                            intermediates,
                            name,
                            ocsp_response,
                            now,
                        );
                        if last.is_ok() {
                            break;
                        }
                    }
                    last
                };
                verified?;
                self.check_depth(
                    end_entity,
                    intermediates,
                    webpki::KeyUsage::server_auth(),
                    now,
                )?;
                Ok(ServerCertVerified::assertion())
            }
            _ => {
                self.check_pin(end_entity)?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        !matches!(self.policy, PeerPolicy::Anyone)
    }

    fn client_auth_mandatory(&self) -> bool {
        self.offer_client_auth()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.client_chain {
            Some(chain) => chain.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if let Some(chain) = &self.client_chain {
            chain.verify_client_cert(end_entity, intermediates, now)?;
            self.check_depth(
                end_entity,
                intermediates,
                webpki::KeyUsage::client_auth(),
                now,
            )?;
            self.check_names(end_entity)?;
        } else {
            self.check_pin(end_entity)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A failed handshake in words: rustls' own text, except that our verifier's reasons (a
/// certificate that is not the pinned one) are printed as written rather than debug-dumped.
pub fn describe_failure(err: &std::io::Error) -> String {
    if let Some(Error::InvalidCertificate(CertificateError::Other(other))) =
        err.get_ref().and_then(|e| e.downcast_ref::<Error>())
    {
        return format!("invalid peer certificate: {}", other.0);
    }
    err.to_string()
}

/// A short, stable reason for a failed handshake: a metrics label and the gist of a log line.
pub fn failure_reason(err: &std::io::Error) -> &'static str {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match err.kind() {
            std::io::ErrorKind::TimedOut => "timeout",
            std::io::ErrorKind::UnexpectedEof => "closed",
            _ => "io",
        };
    };
    match tls {
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::NoCertificatesPresented => "no_certificate",
        Error::AlertReceived(_) => "alert_received",
        Error::PeerIncompatible(_) => "incompatible",
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => "protocol",
        _ => "tls",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA or a server certificate for `node.test`, signed by `by` (none: by itself).
    struct Made {
        params: rcgen::CertificateParams,
        key: rcgen::KeyPair,
        der: CertificateDer<'static>,
    }

    fn made(ca: bool, serial: u8, by: Option<&Made>) -> Made {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["node.test".to_owned()]).expect("p");
        params.serial_number = Some(vec![serial].into());
        // Names tell issuers (and their lists) apart.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("certificate {serial}"));
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let cert = match by {
            None => params.self_signed(&key),
            Some(by) => params.signed_by(&key, &rcgen::Issuer::from_params(&by.params, &by.key)),
        }
        .expect("certificate");
        Made {
            der: cert.der().clone(),
            params,
            key,
        }
    }

    fn crl(by: &Made, revoked: &[&Made]) -> CertificateRevocationListDer<'static> {
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2019, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| rcgen::RevokedCertParams {
                    serial_number: r.params.serial_number.clone().expect("serial"),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&rcgen::Issuer::from_params(&by.params, &by.key))
        .expect("CRL")
        .der()
        .clone()
    }

    #[test]
    fn a_chain_is_held_to_its_depth_and_its_revocation_lists() {
        let root = made(true, 1, None);
        let int = made(true, 2, Some(&root));
        let leaf = made(false, 3, Some(&int));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.der.clone()).expect("root");
        let roots = Arc::new(roots);
        let name = ServerName::try_from("node.test").expect("name");
        let verify = |depth, crls| {
            let policy = PeerPolicy::Chain {
                roots: roots.clone(),
                names: vec![name.clone()],
                depth,
                crls,
            };
            let text = policy.describe();
            let verifier = PeerVerifier::new(policy, &provider).expect("verifier");
            let verdict = verifier
                .verify_server_cert(
                    &leaf.der,
                    std::slice::from_ref(&int.der),
                    &name,
                    &[],
                    UnixTime::now(),
                )
                .map(|_| ())
                .map_err(|e| match e {
                    Error::InvalidCertificate(CertificateError::Other(o)) => o.0.to_string(),
                    e => e.to_string(),
                });
            (verdict, text)
        };
        assert_eq!(verify(None, Vec::new()).0, Ok(()));
        assert_eq!(verify(Some(1), Vec::new()).0, Ok(()));
        let (verdict, text) = verify(Some(0), Vec::new());
        let err = verdict.expect_err("one intermediate past depth 0");
        assert!(err.contains("more than 0 intermediate CA"), "{err}");
        assert!(
            text.contains("through at most 0 intermediate CAs"),
            "{text}"
        );
        // Every issuer's list, nothing revoked; the intermediate revoked; the
        // intermediate's own list missing.
        let (verdict, text) = verify(Some(1), vec![crl(&root, &[]), crl(&int, &[])]);
        assert_eq!(verdict, Ok(()));
        assert!(text.contains("revocation checked"), "{text}");
        let err = verify(Some(1), vec![crl(&root, &[&int]), crl(&int, &[])])
            .0
            .expect_err("revoked");
        assert!(err.to_lowercase().contains("revoked"), "{err}");
        let err = verify(Some(1), vec![crl(&root, &[])])
            .0
            .expect_err("no list of the intermediate's");
        assert!(err.to_lowercase().contains("revocation"), "{err}");
    }
}
