//! The certificates one server serves, and which of them a client gets.
//!
//! nginx takes several `ssl_certificate` lines, typically an RSA and an ECDSA certificate
//! for the same names: OpenSSL keeps one certificate per key type (a second of the same
//! type replaces the first), pairs each key with the listed certificate it belongs to, and
//! gives a client the certificate of the first signature algorithm in the client's list
//! that it has a certificate for (ECDSA for current browsers, RSA for clients without
//! ECDSA). [`Served`] does the same.

use std::path::PathBuf;
use std::sync::Arc;

use gluu_common::tls::{self, TlsError};
use rustls::crypto::CryptoProvider;
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;

/// A server's certificates with their keys: at least one, at most one per key type, in the
/// order of the file.
#[derive(Debug)]
pub struct Served {
    pairs: Vec<Loaded>,
}

/// One served certificate chain and its key.
#[derive(Debug)]
pub struct Loaded {
    pub certificate: PathBuf,
    pub key_path: PathBuf,
    pub key: Arc<CertifiedKey>,
}

impl Served {
    /// Loads the pairs of a server's `ssl_certificate` and `ssl_certificate_key` lines (as
    /// many keys as certificates; `config::server` has checked that much). The Nth key goes
    /// with the Nth certificate or, since OpenSSL pairs them by key type, with another
    /// listed one it belongs to. Also returns a warning for each certificate dropped
    /// because a later line has one of the same key type.
    pub fn load(
        provider: &CryptoProvider,
        certificates: &[PathBuf],
        keys: &[PathBuf],
    ) -> Result<(Served, Vec<String>), TlsError> {
        let keys = &keys[..certificates.len()];
        let mut pairs: Vec<Loaded> = Vec::new();
        let mut warnings = Vec::new();
        for (i, cert) in certificates.iter().enumerate() {
            let (key_path, key) = match tls::load_certified_key(provider, cert, Some(&keys[i])) {
                Ok(k) => (keys[i].clone(), k),
                Err(mismatch @ TlsError::KeyMismatch { .. }) => keys
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .find_map(|(_, k)| {
                        tls::load_certified_key(provider, cert, Some(k))
                            .ok()
                            .map(|c| (k.clone(), c))
                    })
                    .ok_or(mismatch)?,
                Err(e) => return Err(e),
            };
            let kind = key.key.algorithm();
            if let Some(at) = pairs.iter().position(|p| p.key.key.algorithm() == kind) {
                let dropped = pairs.remove(at);
                warnings.push(format!(
                    "\"ssl_certificate {}\" is not served: {} has a key of the same type \
                     ({kind:?}), and as with nginx the last certificate of each key type is \
                     the one served",
                    dropped.certificate.display(),
                    cert.display()
                ));
            }
            pairs.push(Loaded {
                certificate: cert.clone(),
                key_path,
                key,
            });
        }
        Ok((Served { pairs }, warnings))
    }

    pub fn pairs(&self) -> &[Loaded] {
        &self.pairs
    }

    /// The certificate a client gets when nothing else decides (the first).
    pub fn first(&self) -> &Arc<CertifiedKey> {
        &self.pairs[0].key
    }

    /// The certificate for this client: the one that can sign with the first signature
    /// scheme in the client's list. (rustls has already left out of that list the schemes
    /// no TLS 1.2 suite both sides have can use: a TLS 1.2 suite is made for one key
    /// type.) With none, the first: the handshake then fails as it would with that
    /// certificate alone.
    pub fn choose(&self, hello: &ClientHello<'_>) -> &Arc<CertifiedKey> {
        if let [only] = self.pairs.as_slice() {
            return &only.key;
        }
        hello
            .signature_schemes()
            .iter()
            .find_map(|scheme| {
                self.pairs
                    .iter()
                    .find(|p| p.key.key.choose_scheme(&[*scheme]).is_some())
            })
            .map_or(self.first(), |p| &p.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gluu_testkit::Cert;
    use rustls::SignatureAlgorithm;

    fn kinds(s: &Served) -> Vec<(SignatureAlgorithm, String)> {
        s.pairs()
            .iter()
            .map(|p| {
                let key = p.key_path.file_name().expect("name");
                (p.key.key.algorithm(), key.to_string_lossy().into_owned())
            })
            .collect()
    }

    /// Keys pair with their certificates whatever their order (OpenSSL pairs by key
    /// type); a later certificate of the same key type replaces an earlier one, with a
    /// warning; a key that belongs to none of them is an error naming it.
    #[test]
    fn keys_find_their_certificates_and_one_certificate_per_key_type_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rsa = Cert::openssl_rsa(dir.path(), "rsa", 2048);
        let rsa2 = Cert::openssl_rsa(dir.path(), "rsa2", 2048);
        let ec = Cert::new(dir.path(), "ec");
        let provider = tls::provider();

        let swapped = [ec.key.clone(), rsa.key.clone()];
        let (s, dropped) =
            Served::load(&provider, &[rsa.cert.clone(), ec.cert.clone()], &swapped).expect("pairs");
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(
            kinds(&s),
            [
                (SignatureAlgorithm::RSA, "rsa.key".to_owned()),
                (SignatureAlgorithm::ECDSA, "ec.key".to_owned())
            ]
        );

        let certs = [rsa.cert.clone(), ec.cert.clone(), rsa2.cert.clone()];
        let keys = [rsa.key.clone(), ec.key.clone(), rsa2.key.clone()];
        let (s, dropped) = Served::load(&provider, &certs, &keys).expect("pairs");
        assert_eq!(
            kinds(&s),
            [
                (SignatureAlgorithm::ECDSA, "ec.key".to_owned()),
                (SignatureAlgorithm::RSA, "rsa2.key".to_owned())
            ]
        );
        assert_eq!(dropped.len(), 1);
        assert!(
            dropped[0].contains(&format!(
                "\"ssl_certificate {}\" is not served",
                rsa.cert.display()
            )) && dropped[0].contains(&rsa2.cert.display().to_string()),
            "{dropped:?}"
        );

        let other = Cert::new(dir.path(), "other");
        let e = Served::load(
            &provider,
            &[rsa.cert.clone(), ec.cert.clone()],
            &[rsa.key.clone(), other.key.clone()],
        )
        .expect_err("other.key is no listed certificate's");
        let e = e.to_string();
        assert!(
            e.contains(&other.key.display().to_string())
                && e.contains(&ec.cert.display().to_string()),
            "{e}"
        );

        // Keys beyond the certificates are not read (nginx does not use them).
        let missing = dir.path().join("missing.key");
        let (s, _) = Served::load(
            &provider,
            std::slice::from_ref(&ec.cert),
            &[ec.key.clone(), missing],
        )
        .expect("one pair");
        assert_eq!(s.pairs().len(), 1);
    }
}
