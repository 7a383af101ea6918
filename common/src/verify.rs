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
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
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
            PeerPolicy::Chain { names, .. } if names.is_empty() => {
                "chain verified against the CA file (names not checked)".to_owned()
            }
            PeerPolicy::Chain { names, .. } => {
                let names: Vec<_> = names.iter().map(|n| n.to_str().into_owned()).collect();
                format!(
                    "chain verified against the CA file, name one of {}",
                    names.join(", ")
                )
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
            PeerPolicy::Chain { roots, .. } => {
                let server =
                    WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| Error::General(e.to_string()))?;
                let client =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| Error::General(e.to_string()))?;
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
                if names.is_empty() {
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
                }
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
