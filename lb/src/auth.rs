//! nginx's `auth_basic` with an `auth_basic_user_file`: HTTP Basic authentication
//! against an htpasswd file, read at each request as nginx reads it (a change to the file
//! needs no reload), with the password hashes nginx checks: its own `{PLAIN}`, `{SHA}`,
//! `{SSHA}` and `$apr1$`, and those Debian's C library checks for it, `$1$` (MD5),
//! `$5$`/`$6$` (SHA-crypt) and `$2a$`/`$2b$`/`$2x$`/`$2y$` (bcrypt). Another kind of hash
//! (DES crypt, yescrypt) is an error the admin is told of, not a wrong password.

use std::path::Path;
use std::sync::OnceLock;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use data_encoding::BASE64;
use md5::{Digest as _, Md5};
use sha_crypt::PasswordVerifier as _;

/// The decoded `user:password` of an `Authorization: Basic` header.
#[derive(Debug)]
pub struct Credentials {
    decoded: Vec<u8>,
    /// Where the first `:` is (after a name of at least one byte).
    colon: usize,
}

impl Credentials {
    pub fn user(&self) -> &[u8] {
        &self.decoded[..self.colon]
    }

    pub fn password(&self) -> &[u8] {
        &self.decoded[self.colon + 1..]
    }
}

/// The user and password of an `Authorization: Basic` header, read as nginx reads them:
/// the scheme in any case, spaces, base64 up to the first `=` (what follows is ignored;
/// no padding needed, the last symbol's spare bits not checked), the name before the
/// first `:`; none when any step fails or the name is empty.
pub fn credentials(headers: &hyper::HeaderMap) -> Option<Credentials> {
    static NGINX_BASE64: OnceLock<data_encoding::Encoding> = OnceLock::new();
    let value = headers.get(hyper::header::AUTHORIZATION)?.as_bytes();
    let (scheme, encoded) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Basic ") {
        return None;
    }
    let start = encoded.iter().position(|&b| b != b' ')?;
    let encoded = encoded[start..].split(|&b| b == b'=').next()?;
    let base64 = NGINX_BASE64.get_or_init(|| {
        let mut spec = data_encoding::BASE64_NOPAD.specification();
        spec.check_trailing_bits = false;
        spec.encoding().expect("a valid base64 specification")
    });
    let decoded = base64.decode(encoded).ok()?;
    let colon = decoded.iter().position(|&b| b == b':').filter(|&i| i > 0)?;
    Some(Credentials { decoded, colon })
}

/// What the user file says of a user and password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// 401: nginx's log line says why.
    Refused(String),
    /// 403: the file does not exist (nginx's answer then).
    Missing(String),
    /// 500: the file cannot be read, or its hash for the user cannot be checked.
    Failed(String),
}

/// Looks `user` up in the htpasswd file at `path` as nginx does: the first line that
/// starts with `user:` (a line starting with `#` or CR is skipped), its password field up
/// to CR, LF, `:` or the end; then checks `password` against it.
pub fn check(path: &Path, user: &[u8], password: &[u8]) -> Verdict {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("open() \"{}\" failed ({e})", path.display());
            return match e.kind() {
                std::io::ErrorKind::NotFound => Verdict::Missing(why),
                _ => Verdict::Failed(why),
            };
        }
    };
    let name = String::from_utf8_lossy(user);
    let line = text
        .split(|&b| b == b'\n')
        .filter(|l| !matches!(l.first(), Some(b'#' | b'\r')))
        .find_map(|l| l.strip_prefix(user)?.strip_prefix(b":"));
    let Some(rest) = line else {
        return Verdict::Refused(format!(
            "user \"{name}\" was not found in \"{}\"",
            path.display()
        ));
    };
    let end = rest
        .iter()
        .position(|b| matches!(b, b'\r' | b':'))
        .unwrap_or(rest.len());
    let hash = String::from_utf8_lossy(&rest[..end]);
    match verify(password, &hash) {
        Ok(true) => Verdict::Passed,
        Ok(false) => Verdict::Refused(format!("user \"{name}\": password mismatch")),
        Err(why) => Verdict::Failed(format!("user \"{name}\" in \"{}\": {why}", path.display())),
    }
}

/// Whether `password` is the one `hash` was made of; `Err` for a hash gluu-lb cannot check.
pub fn verify(password: &[u8], hash: &str) -> Result<bool, String> {
    // nginx passes the password as a C string: it ends at a NUL.
    let password = password.split(|&b| b == 0).next().unwrap_or_default();
    let same = |made: &[u8], stored: &[u8]| verify_slices_are_equal(made, stored).is_ok();
    if let Some(plain) = hash.strip_prefix("{PLAIN}") {
        return Ok(same(password, plain.as_bytes()));
    }
    if let Some(stored) = hash.strip_prefix("{SSHA}") {
        let decoded = BASE64
            .decode(stored.as_bytes())
            .map_err(|e| format!("its {{SSHA}} hash is not base64 ({e})"))?;
        if decoded.len() < 20 {
            return Err("its {SSHA} hash is too short".to_owned());
        }
        let (digest_part, salt) = decoded.split_at(20);
        let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(password);
        ctx.update(salt);
        return Ok(same(ctx.finish().as_ref(), digest_part));
    }
    if let Some(stored) = hash.strip_prefix("{SHA}") {
        let made = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, password);
        return Ok(same(
            BASE64.encode(made.as_ref()).as_bytes(),
            stored.as_bytes(),
        ));
    }
    for magic in ["$apr1$", "$1$"] {
        if let Some(rest) = hash.strip_prefix(magic) {
            return Ok(same(
                md5_crypt(password, magic, rest).as_bytes(),
                hash.as_bytes(),
            ));
        }
    }
    if ["$5$", "$6$"].iter().any(|m| hash.starts_with(m)) {
        return match sha_crypt::ShaCrypt::default().verify_password(password, hash) {
            Ok(()) => Ok(true),
            Err(sha_crypt::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(format!("its SHA-crypt hash is malformed ({e})")),
        };
    }
    if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|m| hash.starts_with(m))
    {
        return bcrypt::verify(password, hash)
            .map_err(|e| format!("its bcrypt hash is malformed ({e})"));
    }
    let kind = match hash.split('$').nth(1) {
        Some("y") => "yescrypt ($y$)",
        Some("gy") => "gost-yescrypt ($gy$)",
        Some("7") => "scrypt ($7$)",
        Some(_) if hash.starts_with('$') => "unknown",
        _ => "DES crypt, or unknown",
    };
    Err(format!(
        "its password hash is of a kind gluu-lb does not check: {kind}; make it with \
         `htpasswd -B` (bcrypt), `openssl passwd -apr1` or `openssl passwd -6`"
    ))
}

/// MD5-crypt as nginx's `ngx_crypt_apr1` and the C library's `$1$` compute it: `magic`,
/// the salt (up to 8 characters, to the first `$`), `$`, 22 characters of hash.
fn md5_crypt(key: &[u8], magic: &str, rest: &str) -> String {
    let salt = rest.split('$').next().unwrap_or_default().as_bytes();
    let salt = &salt[..salt.len().min(8)];
    let mut alternate = Md5::new();
    alternate.update(key);
    alternate.update(salt);
    alternate.update(key);
    let alternate = alternate.finalize();
    let mut md5 = Md5::new();
    md5.update(key);
    md5.update(magic.as_bytes());
    md5.update(salt);
    for chunk in key.chunks(16) {
        md5.update(&alternate[..chunk.len()]);
    }
    let mut i = key.len();
    while i > 0 {
        md5.update(if i & 1 == 1 { &[0u8][..] } else { &key[..1] });
        i >>= 1;
    }
    let mut last = md5.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(key);
        } else {
            ctx.update(last);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(key);
        }
        if round & 1 == 1 {
            ctx.update(last);
        } else {
            ctx.update(key);
        }
        last = ctx.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = format!("{magic}{}$", String::from_utf8_lossy(salt));
    let f = |i: usize| u32::from(last[i]);
    for (v, n) in [
        ((f(0) << 16) | (f(6) << 8) | f(12), 4),
        ((f(1) << 16) | (f(7) << 8) | f(13), 4),
        ((f(2) << 16) | (f(8) << 8) | f(14), 4),
        ((f(3) << 16) | (f(9) << 8) | f(15), 4),
        ((f(4) << 16) | (f(10) << 8) | f(5), 4),
        (f(11), 2),
    ] {
        let mut v = v;
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes made by `openssl passwd` (OpenSSL 3.0, Debian 12) of "secret", and by the
    /// crates of other kinds; each checks against its password and not another.
    #[test]
    fn hashes_check_as_the_tools_made_them() {
        let cases = [
            "{PLAIN}secret",
            "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            "$apr1$salt1234$G61s9lpZAELkzUFCbj/53/",
            "$1$salt1234$GexpiwjB8qThXlxv/yIG6.",
            "$5$salt1234$JR6dBKbsnBZUberntG.C1thHq3lbqZS1ZQECPMdkD3/",
            "$6$salt1234$XlM3TAPQpzPux1K5SXljYTSlmwnoAbsunXwwWMLH2USuV84oQBkDPWUDYWZltiv6PdqNfuqoMB4aXKHtDfWeo/",
        ];
        for hash in cases {
            assert_eq!(verify(b"secret", hash), Ok(true), "{hash}");
            assert_eq!(verify(b"Secret", hash), Ok(false), "{hash}");
        }
        let bcrypt = bcrypt::hash("secret", 4).expect("bcrypt");
        assert_eq!(verify(b"secret", &bcrypt), Ok(true));
        assert_eq!(verify(b"secre", &bcrypt), Ok(false));
        let mut ssha = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
        ssha.update(b"secret");
        ssha.update(b"NaCl");
        let ssha = format!(
            "{{SSHA}}{}",
            BASE64.encode(&[ssha.finish().as_ref(), b"NaCl"].concat())
        );
        assert_eq!(verify(b"secret", &ssha), Ok(true));
        assert_eq!(verify(b"secret!", &ssha), Ok(false));
        for (hash, said) in [
            ("$y$j9T$salt$hash", "yescrypt"),
            ("abJnggxhB/yWI", "DES crypt"),
            ("{SSHA}!!", "not base64"),
            ("$6$", "malformed"),
        ] {
            let e = verify(b"secret", hash).expect_err(hash);
            assert!(e.contains(said), "{hash}: {e}");
        }
    }

    #[test]
    fn the_file_is_read_as_nginx_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            "# admin:{PLAIN}commented\n\r\nadmin:{PLAIN}first:comment\nadmin:{PLAIN}second\n\
             ann:{PLAIN}crlf\r\nodd:$y$x$y$z\nlast:{PLAIN}no-newline",
        )
        .expect("write");
        let check = |u: &str, p: &str| check(&path, u.as_bytes(), p.as_bytes());
        assert_eq!(check("admin", "first"), Verdict::Passed);
        assert!(matches!(check("admin", "second"), Verdict::Refused(m) if m.contains("mismatch")));
        assert!(matches!(check("# admin", "commented"), Verdict::Refused(_)));
        assert_eq!(check("ann", "crlf"), Verdict::Passed);
        assert_eq!(check("last", "no-newline"), Verdict::Passed);
        assert!(matches!(check("adm", "first"), Verdict::Refused(m) if m.contains("not found")));
        assert!(matches!(check("odd", "x"), Verdict::Failed(m) if m.contains("yescrypt")));
        let missing = super::check(&dir.path().join("none"), b"a", b"b");
        assert!(matches!(missing, Verdict::Missing(m) if m.starts_with("open() ")));
    }
}
