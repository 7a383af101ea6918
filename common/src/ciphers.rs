//! OpenSSL's cipher settings read as OpenSSL reads them, for the suites rustls has: a
//! cipher string (nginx's `ssl_ciphers`, stunnel's `ciphers`) for TLS 1.2 and a list of
//! names (stunnel's `ciphersuites`) for TLS 1.3, and the provider that offers just those.
//! Checked against the `openssl ciphers` of the machine in the tests.

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedCipherSuite};

/// One TLS 1.2 suite we have (rustls with aws-lc-rs), with the words of OpenSSL's cipher strings that select
/// it (checked against `openssl ciphers` in the tests).
struct Suite {
    name: &'static str,
    suite: CipherSuite,
    words: &'static [&'static str],
    /// Bits, for `@STRENGTH`.
    strength: u16,
}

const ECDHE: &[&str] = &[
    "ALL", "DEFAULT", "HIGH", "TLSv1.2", "kECDHE", "kEECDH", "ECDHE", "EECDH", "ECDH",
];

macro_rules! suite {
    ($name:literal, $suite:ident, $strength:literal, [$($word:literal),*]) => {
        Suite {
            name: $name,
            suite: CipherSuite::$suite,
            words: &[$($word),*],
            strength: $strength,
        }
    };
}

/// In OpenSSL's own order (`openssl ciphers ALL`), which a word adds them in.
const SUITES: &[Suite] = &[
    suite!(
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        256,
        ["aECDSA", "ECDSA", "AES", "AESGCM", "AES256", "FIPS"]
    ),
    suite!(
        "ECDHE-RSA-AES256-GCM-SHA384",
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        256,
        ["aRSA", "AES", "AESGCM", "AES256", "FIPS"]
    ),
    suite!(
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        256,
        ["aECDSA", "ECDSA", "CHACHA20"]
    ),
    suite!(
        "ECDHE-RSA-CHACHA20-POLY1305",
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        256,
        ["aRSA", "CHACHA20"]
    ),
    suite!(
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        128,
        ["aECDSA", "ECDSA", "AES", "AESGCM", "AES128", "FIPS"]
    ),
    suite!(
        "ECDHE-RSA-AES128-GCM-SHA256",
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        128,
        ["aRSA", "AES", "AESGCM", "AES128", "FIPS"]
    ),
];

impl Suite {
    /// Whether the cipher string item `A+B+...` selects it: every part is its name or one
    /// of its words (a word OpenSSL knows but this suite lacks, or one it does not know,
    /// selects nothing, as in OpenSSL).
    fn selected_by(&self, item: &str) -> bool {
        item.split('+')
            .all(|w| w == self.name || ECDHE.contains(&w) || self.words.contains(&w))
    }
}

/// The TLS 1.2 suites an OpenSSL cipher string (nginx's `ssl_ciphers`, stunnel's
/// `ciphers`) selects, in its order, as OpenSSL's
/// `ssl_cipher_process_rulestr` applies it: a word adds the suites it selects that are not
/// in the list yet at the end, `-` takes them out (to the front of the ones that can come
/// back), `!` takes them out for good, `+` moves them to the end, `@STRENGTH` orders by
/// key length. Selecting none of ours is an error, as selecting none is to OpenSSL.
pub fn select_tls12(text: &str) -> Result<Vec<CipherSuite>, String> {
    // (index into SUITES, in the list)
    let mut list: Vec<(usize, bool)> = (0..SUITES.len()).map(|i| (i, false)).collect();
    for item in text.split([':', ' ', ',', ';']).filter(|s| !s.is_empty()) {
        if let Some(command) = item.strip_prefix('@') {
            if command == "STRENGTH" {
                for bits in [256, 128] {
                    move_to_end(&mut list, |i, on| on && SUITES[i].strength == bits);
                }
            } else if !command.starts_with("SECLEVEL=") {
                return Err(format!("\"{item}\" is not supported"));
            }
            continue;
        }
        if item.starts_with("SUITEB") {
            return Err(format!("\"{item}\" is not supported"));
        }
        let (op, words) = match item.as_bytes()[0] {
            b'!' | b'-' | b'+' => (item.as_bytes()[0], &item[1..]),
            _ => (b' ', item),
        };
        let hit = |i: usize| SUITES[i].selected_by(words);
        match op {
            b'!' => list.retain(|&(i, _)| !hit(i)),
            b'-' => {
                let (out, rest): (Vec<_>, Vec<_>) =
                    list.into_iter().partition(|&(i, on)| on && hit(i));
                list = out
                    .into_iter()
                    .map(|(i, _)| (i, false))
                    .chain(rest)
                    .collect();
            }
            b'+' => move_to_end(&mut list, |i, on| on && hit(i)),
            _ => {
                move_to_end(&mut list, |i, on| !on && hit(i));
                for entry in &mut list {
                    entry.1 |= hit(entry.0);
                }
            }
        }
    }
    let chosen: Vec<CipherSuite> = list
        .into_iter()
        .filter(|&(_, on)| on)
        .map(|(i, _)| SUITES[i].suite)
        .collect();
    if chosen.is_empty() {
        let ours: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
        return Err(format!(
            "it selects none of the TLS 1.2 suites rustls has ({})",
            ours.join(":")
        ));
    }
    Ok(chosen)
}

/// Moves the entries `pick` chooses to the end of `list`, in their order.
fn move_to_end(list: &mut Vec<(usize, bool)>, pick: impl Fn(usize, bool) -> bool) {
    let (moved, rest): (Vec<_>, Vec<_>) = list.drain(..).partition(|&(i, on)| pick(i, on));
    list.extend(rest);
    list.extend(moved);
}

/// The TLS 1.3 suites rustls has, by the names OpenSSL's `-ciphersuites` takes.
const TLS13: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
];

/// The TLS 1.3 suites a `:`-separated list of names selects, in its order; names rustls
/// lacks (`TLS_AES_128_CCM_SHA256`) select nothing, as OpenSSL ignores names it lacks, and
/// naming none of ours is an error, as naming none is to OpenSSL.
pub fn select_tls13(text: &str) -> Result<Vec<CipherSuite>, String> {
    let mut out = Vec::new();
    for name in text.split(':').filter(|n| !n.is_empty()) {
        if let Some((_, c)) = TLS13.iter().find(|(n, _)| *n == name)
            && !out.contains(c)
        {
            out.push(*c);
        }
    }
    if out.is_empty() {
        let ours: Vec<&str> = TLS13.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "it names none of the TLS 1.3 suites rustls has ({})",
            ours.join(":")
        ));
    }
    Ok(out)
}

/// OpenSSL's name of `suite` (what nginx's `$ssl_cipher` shows), `None` for one rustls
/// lacks.
pub fn openssl_name(suite: CipherSuite) -> Option<&'static str> {
    SUITES
        .iter()
        .map(|s| (s.name, s.suite))
        .chain(TLS13.iter().copied())
        .find(|(_, s)| *s == suite)
        .map(|(n, _)| n)
}

/// What is wrong with TLS 1.2 suites `chosen` for a certificate whose key is `key`, when
/// none of them can be used with it (ECDSA suites need an ECDSA or Ed25519 key, RSA suites
/// an RSA key): OpenSSL accepts such a list and then fails every TLS 1.2 handshake.
pub fn unusable_with(key: rustls::SignatureAlgorithm, chosen: &[CipherSuite]) -> Option<String> {
    let needs = match key {
        rustls::SignatureAlgorithm::RSA => "aRSA",
        rustls::SignatureAlgorithm::ECDSA | rustls::SignatureAlgorithm::ED25519 => "aECDSA",
        _ => return None,
    };
    let usable = SUITES
        .iter()
        .any(|s| chosen.contains(&s.suite) && s.words.contains(&needs));
    (!usable).then(|| {
        format!(
            "none of the TLS 1.2 suites chosen can be used with the certificate's {key:?} key \
             (it needs {} suites)",
            if needs == "aRSA" {
                "ECDHE-RSA"
            } else {
                "ECDHE-ECDSA"
            }
        )
    })
}

/// `provider` offering, for each version a list is given for, just those suites in that
/// order (the other version's in the provider's own order).
pub fn restrict(
    provider: &CryptoProvider,
    tls13: Option<&[CipherSuite]>,
    tls12: Option<&[CipherSuite]>,
) -> CryptoProvider {
    let pick = |is13: bool, chosen: Option<&[CipherSuite]>| -> Vec<SupportedCipherSuite> {
        let mine = provider
            .cipher_suites
            .iter()
            .filter(move |s| matches!(s, SupportedCipherSuite::Tls13(_)) == is13);
        match chosen {
            Some(list) => list
                .iter()
                .filter_map(|c| mine.clone().find(|s| s.suite() == *c).copied())
                .collect(),
            None => mine.copied().collect(),
        }
    };
    CryptoProvider {
        cipher_suites: [pick(true, tls13), pick(false, tls12)].concat(),
        ..provider.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<&'static str> {
        select_tls12(text)
            .expect("select")
            .into_iter()
            .map(|c| SUITES.iter().find(|s| s.suite == c).expect("ours").name)
            .collect()
    }

    #[test]
    fn a_list_of_names_is_taken_in_its_order() {
        assert_eq!(
            names(
                "ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
            ),
            ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
        );
        let none = select_tls12("DHE-RSA-AES128-GCM-SHA256:RC4").expect_err("none of ours");
        assert!(
            none.starts_with("it selects none of the TLS 1.2 suites"),
            "{none}"
        );
        assert!(select_tls13("TLS_AES_128_CCM_SHA256").is_err());
        assert_eq!(names("HIGH:!aNULL:!MD5").len(), SUITES.len());
    }

    /// The suites and order OpenSSL's own parser makes of each string, of those we have.
    #[test]
    fn cipher_strings_select_what_openssl_selects() {
        // Installed by scripts/setup.sh (the README's test command runs it).
        let openssl = "openssl";
        for text in [
            "HIGH:!aNULL:!MD5",
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
             ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
             DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305",
            "EECDH+AESGCM:EDH+AESGCM",
            "EECDH+AESGCM:EDH+AESGCM:AES256+EECDH:AES256+EDH",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "AES128:AES256:CHACHA20",
            "ALL:-AES256:AES256",
            "ALL:!AES256:AES256",
            "ALL:+AES128",
            "ALL:+aRSA:-CHACHA20",
            "CHACHA20:AES128:@STRENGTH",
            "AES128+ECDSA:ECDHE+aRSA:HIGH",
            "kEECDH+ECDSA+AES128:kEECDH+ECDSA:kEECDH:-ECDSA+AES256",
            "FIPS:!ECDSA",
            "DEFAULT:!CHACHA20",
            "ECDHE-RSA-CHACHA20-POLY1305,ECDHE-ECDSA-AES128-GCM-SHA256 HIGH",
            "CHACHA20:-ALL:ECDSA",
        ] {
            let out = std::process::Command::new(openssl)
                .args(["ciphers", "-tls1_2", text])
                .output()
                .expect("openssl (scripts/setup.sh installs it)");
            let listed = String::from_utf8_lossy(&out.stdout);
            let theirs: Vec<&str> = listed
                .trim()
                .split(':')
                .filter(|n| SUITES.iter().any(|s| s.name == *n))
                .collect();
            assert_eq!(names(text), theirs, "{text}");
        }
    }

    #[test]
    fn commands_gluu_lb_cannot_follow_are_refused() {
        assert!(select_tls12("HIGH:@SECLEVEL=2").is_ok());
        assert!(select_tls12("HIGH:@FOO").is_err());
        assert!(select_tls12("SUITEB128").is_err());
    }

    #[test]
    fn tls13_names_select_what_openssl_selects() {
        for text in [
            "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
            "TLS_AES_128_CCM_SHA256:TLS_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
        ] {
            let out = std::process::Command::new("openssl")
                .args(["ciphers", "-s", "-tls1_3", "-ciphersuites", text])
                .output()
                .expect("openssl (scripts/setup.sh installs it)");
            let listed = String::from_utf8_lossy(&out.stdout);
            let theirs: Vec<&str> = listed
                .trim()
                .split(':')
                .filter(|n| TLS13.iter().any(|(name, _)| name == n))
                .collect();
            let ours: Vec<&str> = select_tls13(text)
                .expect("select")
                .iter()
                .map(|c| TLS13.iter().find(|(_, s)| s == c).expect("ours").0)
                .collect();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn suites_of_the_other_key_type_are_found_out() {
        use rustls::SignatureAlgorithm::{ECDSA, RSA};
        let rsa_only = select_tls12("aRSA").expect("select");
        let all = select_tls12("ALL").expect("select");
        let why = unusable_with(ECDSA, &rsa_only).expect("unusable");
        assert!(
            why.contains("ECDSA key (it needs ECDHE-ECDSA suites)"),
            "{why}"
        );
        assert_eq!(unusable_with(RSA, &rsa_only), None);
        assert_eq!(unusable_with(ECDSA, &all), None);
        assert!(unusable_with(RSA, &select_tls12("ECDSA").expect("select")).is_some());
    }

    #[test]
    fn a_restricted_provider_offers_the_chosen_suites_in_their_order() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let tls12 = select_tls12("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
            .expect("select");
        let tls13 = select_tls13("TLS_CHACHA20_POLY1305_SHA256").expect("select");
        let suites = |p: &CryptoProvider| -> Vec<CipherSuite> {
            p.cipher_suites.iter().map(|s| s.suite()).collect()
        };
        assert_eq!(
            suites(&restrict(&provider, Some(&tls13), Some(&tls12))),
            [
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ]
        );
        assert_eq!(suites(&restrict(&provider, None, None)), suites(&provider));
    }
}
