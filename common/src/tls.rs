//! The one place that reads PEM files and turns them into rustls material.
//!
//! Every daemon loads the same kinds of files the guide creates (`secureredis.pem` holding key
//! and certificate together, `httpd.crt` + `httpd.key`), and every one of them must fail the
//! same clear way when a file is missing or a key is one rustls refuses (the guide's
//! `openssl genrsa ... 1024`). TLS 1.2 and 1.3 only, with the aws-lc-rs provider.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// How to make a key rustls accepts; part of every "unusable key" message.
pub const REGENERATE_HINT: &str = "regenerate it with 2048+ bit RSA or ECDSA P-256, e.g.\n  \
     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
     -subj /CN=HOST -keyout key.pem -out cert.pem\n  \
     (or -newkey rsa:3072); for stunnel's one-file form: `cat key.pem cert.pem > secureredis.pem`";

/// Errors from loading TLS material; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: holds no certificate (expected a -----BEGIN CERTIFICATE----- block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: holds no CRL (expected a -----BEGIN X509 CRL----- block)", path.display())]
    NoCrl { path: PathBuf },
    #[error("{}: holds a certificate: a CRL file may hold only CRLs (-----BEGIN X509 CRL----- blocks)", path.display())]
    CertificateAmongCrls { path: PathBuf },
    #[error("{}: holds no private key (expected a -----BEGIN PRIVATE KEY----- block, or set `key`)", path.display())]
    NoKey { path: PathBuf },
    #[error(
        "{p}: the private key is encrypted with a passphrase, which gluu-ha cannot ask for \
         (nginx and stunnel ask for it at the terminal); write it out without one, readable \
         by root only: `(umask 077; openssl pkey -in {p} -out {p}.plain)`, then name \
         {p}.plain",
        p = path.display()
    )]
    EncryptedKey { path: PathBuf },
    #[error("{}: rustls cannot use this private key: {reason}; {REGENERATE_HINT}", path.display())]
    KeyUnusable { path: PathBuf, reason: String },
    #[error("{}: the private key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: {reason}", path.display())]
    Store { path: PathBuf, reason: String },
}

/// The crypto provider every daemon uses: aws-lc-rs, the rustls default, with the
/// SHA-256 suites first. AES-128-GCM is as safe here as AES-256, and SHA-256 runs on the
/// CPU's SHA extensions where SHA-384 does not: measured, the SHA-384 key schedule was the
/// largest user-space cost of a fresh tunneled connection (bench/RESULTS.md).
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite().as_str().is_some_and(|n| n.ends_with("SHA384")));
    Arc::new(provider)
}

/// The protocol versions we speak: TLS 1.2 and 1.3, nothing older.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The items of one kind in `pem`, the text of `path`, in file order.
fn items<T: PemObject>(path: &Path, pem: &[u8]) -> Result<Vec<T>, TlsError> {
    T::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// All certificates in a PEM file, in file order (leaf first, as the guide's files are).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = items(path, &pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// All certificate revocation lists in a PEM file, in file order. A file with none is an
/// error, and so is one that holds certificates as well (OpenSSL would trust those as CAs).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read(path)?;
    let crls: Vec<CertificateRevocationListDer<'static>> = items(path, &pem)?;
    if CertificateDer::pem_slice_iter(&pem).next().is_some() {
        return Err(TlsError::CertificateAmongCrls {
            path: path.to_owned(),
        });
    }
    if crls.is_empty() {
        return Err(TlsError::NoCrl {
            path: path.to_owned(),
        });
    }
    Ok(crls)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        // PKCS#8's encrypted form, and OpenSSL's older one (a header in the PEM block).
        _ if [
            &b"-----BEGIN ENCRYPTED PRIVATE KEY-----"[..],
            b"Proc-Type: 4,ENCRYPTED",
        ]
        .iter()
        .any(|mark| pem.windows(mark.len()).any(|w| w == *mark)) =>
        {
            TlsError::EncryptedKey {
                path: path.to_owned(),
            }
        }
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// Why aws-lc-rs refuses a key, in words an admin can act on.
fn key_rejection(key: &PrivateKeyDer<'_>, rustls_reason: &str) -> String {
    use aws_lc_rs::rsa::KeyPair;
    let rsa = match key {
        PrivateKeyDer::Pkcs1(der) => Some(KeyPair::from_der(der.secret_pkcs1_der())),
        PrivateKeyDer::Pkcs8(der) => Some(KeyPair::from_pkcs8(der.secret_pkcs8_der())),
        _ => None,
    };
    match rsa {
        Some(Err(e)) if e.to_string() == "TooSmall" => {
            "it is an RSA key shorter than 2048 bits (the guide's `openssl genrsa ... 1024`); \
             rustls refuses keys that small"
                .to_owned()
        }
        _ => rustls_reason.to_owned(),
    }
}

/// A certificate chain and its private key, checked to belong together.
///
/// `key_path` defaults to `cert_path`, as stunnel's `key` does: the guide's
/// `secureredis.pem` holds both.
pub fn load_certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: Option<&Path>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert_path)?;
    let key_path = key_path.unwrap_or(cert_path);
    let key_der = load_key(key_path)?;
    let key = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| TlsError::KeyUnusable {
            path: key_path.to_owned(),
            reason: key_rejection(&key_der, &e.to_string()),
        })?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    })?;
    Ok(Arc::new(certified))
}

/// A root store made of every certificate in a PEM file (stunnel's `CAfile`).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Store {
            path: path.to_owned(),
            reason: format!("a certificate cannot be used as a trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

/// The mode of the key file `path` (`0o777` bits) when it has any of the `mask` bits, e.g.
/// `0o004` for a key every user may read; `None` otherwise, or when the file cannot be
/// looked at (loading it says why).
pub fn exposed_key(path: &Path, mask: u32) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & mask != 0).then_some(mode)
}

/// SHA-256 fingerprint in the form `openssl x509 -fingerprint -sha256` prints, so that an
/// admin can match what the log says against a file on disk.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Serves one certificate whatever the peer asks for (server side and client side alike).
#[derive(Debug)]
pub struct SingleIdentity(pub Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for SingleIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for SingleIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn combined_pem_loads_and_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ck = rcgen::generate_simple_self_signed(vec!["redis".into()]).expect("rcgen");
        let both = format!("{}{}", ck.signing_key.serialize_pem(), ck.cert.pem());
        let p = write(dir.path(), "both.pem", &both);
        let key = load_certified_key(&provider(), &p, None).expect("load");
        assert_eq!(key.cert.len(), 1);
        assert_eq!(fingerprint(&key.cert[0]).len(), 95);
    }

    #[test]
    fn key_of_another_cert_is_a_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).expect("rcgen");
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).expect("rcgen");
        let cert = write(dir.path(), "a.crt", &a.cert.pem());
        let key = write(dir.path(), "b.key", &b.signing_key.serialize_pem());
        let err = load_certified_key(&provider(), &cert, Some(&key)).expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn missing_parts_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).expect("rcgen");
        let cert_only = write(dir.path(), "a.crt", &a.cert.pem());
        let err = load_certified_key(&provider(), &cert_only, None).expect_err("no key");
        assert!(
            err.to_string().contains("a.crt: holds no private key"),
            "{err}"
        );
        let key_only = write(dir.path(), "a.key", &a.signing_key.serialize_pem());
        let err = load_certs(&key_only).expect_err("no cert");
        assert!(err.to_string().contains("holds no certificate"), "{err}");
        let err = load_certs(&dir.path().join("absent.pem")).expect_err("absent");
        assert!(err.to_string().contains("absent.pem: cannot read"), "{err}");
    }

    /// A key with a passphrase, in PKCS#8's encrypted form and in OpenSSL's older one
    /// (made by the real `openssl`), is named as such, with the way out.
    #[test]
    fn an_encrypted_key_is_named_as_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).expect("rcgen");
        let plain = write(dir.path(), "plain.key", &a.signing_key.serialize_pem());
        for (name, args) in [
            ("pkcs8.key", &["pkcs8", "-topk8", "-v2", "aes-256-cbc"][..]),
            ("legacy.key", &["ec", "-aes256"][..]),
        ] {
            let out = dir.path().join(name);
            let made = std::process::Command::new("openssl")
                .args(args)
                .arg("-in")
                .arg(&plain)
                .args(["-passout", "pass:secret", "-out"])
                .arg(&out)
                .output()
                .expect("openssl (scripts/setup.sh installs it)");
            assert!(made.status.success(), "{made:?}");
            let err = load_key(&out).expect_err(name);
            assert!(
                matches!(err, TlsError::EncryptedKey { .. })
                    && err.to_string().contains("pkey -in"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn a_crl_file_holds_crls_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2019, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&rcgen::Issuer::from_params(&params, &key))
        .expect("CRL")
        .pem()
        .expect("PEM");
        let two = write(dir.path(), "two.crl", &format!("{crl}{crl}"));
        assert_eq!(load_crls(&two).expect("two CRLs").len(), 2);
        let with_ca = write(dir.path(), "ca.crl", &format!("{crl}{}", ca.pem()));
        let err = load_crls(&with_ca).expect_err("a certificate");
        assert!(
            err.to_string().contains("ca.crl: holds a certificate"),
            "{err}"
        );
        let none = write(dir.path(), "none.crl", &ca.pem());
        assert!(load_crls(&none).is_err());
        let empty = write(dir.path(), "empty.crl", "");
        let err = load_crls(&empty).expect_err("empty");
        assert!(err.to_string().contains("empty.crl: holds no CRL"), "{err}");
    }
}
