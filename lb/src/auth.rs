//! nginx's `auth_basic` with an `auth_basic_user_file`: HTTP Basic authentication
//! against an htpasswd file, read at each request as nginx reads it (a change to the file
//! needs no reload), with the password hashes nginx checks: its own `{PLAIN}`, `{SHA}`,
//! `{SSHA}` and `$apr1$`, and those Debian's C library checks for it, `$1$` (MD5),
//! `$5$`/`$6$` (SHA-crypt), `$2a$`/`$2b$`/`$2x$`/`$2y$` (bcrypt) and `$y$` (yescrypt,
//! Debian's default). Another kind of hash (DES crypt, scrypt) is an error the admin is
//! told of, not a wrong password.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use data_encoding::BASE64;
use md5::{Digest as _, Md5};
use sha_crypt::password_hash::{self, PasswordVerifier as _};
use tokio::sync::Semaphore;

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

/// [`check`] on tokio's blocking threads, at most one per core at a time, as nginx
/// checks on its workers: a flood of bcrypt or yescrypt checks (yescrypt's default setting
/// takes 16 MiB and tens of milliseconds each) waits here, in the order it came, instead
/// of taking every core and the memory; requests that need no password are not held up.
/// A check keeps its turn until it ends, even when its client has gone (a client that
/// sends logins and hangs up at once cannot start more checks than there are cores).
pub async fn check_in_turn(path: PathBuf, given: Credentials) -> Result<Verdict, String> {
    let turn = turns().acquire_owned().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        check(&path, given.user(), given.password())
    })
    .await
    .map_err(|e| e.to_string())
}

/// One turn per core.
fn turns() -> Arc<Semaphore> {
    static TURNS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    TURNS
        .get_or_init(|| Arc::new(Semaphore::new(cores())))
        .clone()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The `user:hash` lines of a user file as nginx reads them, with their line numbers: a
/// line starting with `#` or CR is skipped, the name runs to the first `:`, the hash to
/// CR, `:` or the end of the line.
fn entries(text: &[u8]) -> impl Iterator<Item = (usize, &[u8], &[u8])> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !matches!(l.first(), Some(b'#' | b'\r')))
        .filter_map(|(i, l)| {
            let (name, rest) = l.split_at(l.iter().position(|&b| b == b':')?);
            let rest = &rest[1..];
            let end = rest
                .iter()
                .position(|b| matches!(b, b'\r' | b':'))
                .unwrap_or(rest.len());
            Some((i + 1, name, &rest[..end]))
        })
}

fn read(path: &Path) -> Result<Vec<u8>, (std::io::ErrorKind, String)> {
    std::fs::read(path).map_err(|e| {
        (
            e.kind(),
            format!("open() \"{}\" failed ({e})", path.display()),
        )
    })
}

/// Looks `user` up in the htpasswd file at `path` as nginx does (the first line for the
/// user counts), then checks `password` against its hash.
pub fn check(path: &Path, user: &[u8], password: &[u8]) -> Verdict {
    let text = match read(path) {
        Ok(t) => t,
        Err((std::io::ErrorKind::NotFound, why)) => return Verdict::Missing(why),
        Err((_, why)) => return Verdict::Failed(why),
    };
    let name = String::from_utf8_lossy(user);
    let Some((_, _, hash)) = entries(&text).find(|(_, n, _)| *n == user) else {
        return Verdict::Refused(format!(
            "user \"{name}\" was not found in \"{}\"",
            path.display()
        ));
    };
    match verify(password, &String::from_utf8_lossy(hash)) {
        Ok(true) => Verdict::Passed,
        Ok(false) => Verdict::Refused(format!("user \"{name}\": password mismatch")),
        Err(why) => Verdict::Failed(format!("user \"{name}\" in \"{}\": {why}", path.display())),
    }
}

/// What `-t` says of a user file: why it cannot be read (and what a request then gets),
/// that it holds no user, or a line for each user whose hash gluu-lb cannot check (whose
/// every login would get 500) and for each line a user's earlier line hides.
pub fn survey(path: &Path) -> Vec<String> {
    let text = match read(path) {
        Ok(t) => t,
        Err((kind, why)) => {
            let status = if kind == std::io::ErrorKind::NotFound {
                403
            } else {
                500
            };
            return vec![format!(
                "the user file cannot be read: {why}: every request that needs it gets \
                 {status} until it can"
            )];
        }
    };
    let mut first = std::collections::HashMap::new();
    let mut said = Vec::new();
    for (line, name, hash) in entries(&text) {
        let (at, who) = (path.display(), String::from_utf8_lossy(name));
        if let Some(counted) = first.get(name) {
            said.push(format!(
                "{at}:{line}: user \"{who}\" is on line {counted} already, and only that \
                 line counts (nginx reads the first): this one is never used"
            ));
            continue;
        }
        first.insert(name, line);
        if let Err(why) = scheme(&String::from_utf8_lossy(hash)) {
            said.push(format!(
                "{at}:{line}: user \"{who}\": {why}; every login as that user gets 500"
            ));
        }
    }
    if first.is_empty() {
        said.push(format!(
            "the user file {} holds no user: every request that needs it gets 401",
            path.display()
        ));
    }
    said
}

/// The kinds of password hash gluu-lb checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Plain,
    Ssha,
    Sha,
    /// `$apr1$` or `$1$`: the magic.
    Md5Crypt(&'static str),
    ShaCrypt,
    Bcrypt,
    Yescrypt,
}

/// The kind of `hash`; `Err` names a kind gluu-lb does not check and how to make one it
/// does.
fn scheme(hash: &str) -> Result<Scheme, String> {
    let prefixed = [
        ("{PLAIN}", Scheme::Plain),
        ("{SSHA}", Scheme::Ssha),
        ("{SHA}", Scheme::Sha),
        ("$apr1$", Scheme::Md5Crypt("$apr1$")),
        ("$1$", Scheme::Md5Crypt("$1$")),
        ("$5$", Scheme::ShaCrypt),
        ("$6$", Scheme::ShaCrypt),
        ("$2a$", Scheme::Bcrypt),
        ("$2b$", Scheme::Bcrypt),
        ("$2x$", Scheme::Bcrypt),
        ("$2y$", Scheme::Bcrypt),
        ("$y$", Scheme::Yescrypt),
    ];
    if let Some((_, s)) = prefixed.iter().find(|(p, _)| hash.starts_with(p)) {
        return Ok(*s);
    }
    let kind = match hash.split('$').nth(1) {
        Some("gy") => "gost-yescrypt ($gy$)",
        Some("7") => "scrypt ($7$)",
        Some("sha1") => "SHA1-crypt ($sha1$)",
        Some(_) if hash.starts_with('$') => "unknown",
        _ => "DES crypt, or unknown",
    };
    Err(format!(
        "its password hash is of a kind gluu-lb does not check: {kind}; make it with \
         `htpasswd -B` (bcrypt), `mkpasswd` (yescrypt) or `openssl passwd -6`"
    ))
}

/// Whether `password` is the one `hash` was made of; `Err` for a hash gluu-lb cannot check.
pub fn verify(password: &[u8], hash: &str) -> Result<bool, String> {
    // nginx passes the password as a C string: it ends at a NUL.
    let password = password.split(|&b| b == 0).next().unwrap_or_default();
    let same = |made: &[u8], stored: &[u8]| verify_slices_are_equal(made, stored).is_ok();
    let stored = |prefix: &str| &hash[prefix.len()..];
    match scheme(hash)? {
        Scheme::Plain => Ok(same(password, stored("{PLAIN}").as_bytes())),
        Scheme::Ssha => {
            let decoded = BASE64
                .decode(stored("{SSHA}").as_bytes())
                .map_err(|e| format!("its {{SSHA}} hash is not base64 ({e})"))?;
            if decoded.len() < 20 {
                return Err("its {SSHA} hash is too short".to_owned());
            }
            let (digest_part, salt) = decoded.split_at(20);
            let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
            ctx.update(password);
            ctx.update(salt);
            Ok(same(ctx.finish().as_ref(), digest_part))
        }
        Scheme::Sha => {
            let made = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, password);
            Ok(same(
                BASE64.encode(made.as_ref()).as_bytes(),
                stored("{SHA}").as_bytes(),
            ))
        }
        Scheme::Md5Crypt(magic) => Ok(same(
            md5_crypt(password, magic, stored(magic)).as_bytes(),
            hash.as_bytes(),
        )),
        Scheme::ShaCrypt => {
            password_hash_verdict(sha_crypt::ShaCrypt::default().verify_password(password, hash))
                .map_err(|e| format!("its SHA-crypt hash is malformed ({e})"))
        }
        Scheme::Bcrypt => bcrypt::verify(password, hash)
            .map_err(|e| format!("its bcrypt hash is malformed ({e})")),
        Scheme::Yescrypt => {
            password_hash_verdict(yescrypt::Yescrypt::default().verify_password(password, hash))
                .map_err(|e| format!("its yescrypt hash is malformed ({e})"))
        }
    }
}

/// A `password-hash` crate's answer: a mismatch is `false`, anything else wrong an error.
fn password_hash_verdict(
    r: Result<(), password_hash::Error>,
) -> Result<bool, password_hash::Error> {
    match r {
        Ok(()) => Ok(true),
        Err(password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(e),
    }
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
            // Made by Debian 12's libxcrypt (Perl's crypt()): its default settings, as
            // `mkpasswd` writes them, and a short salt.
            "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$GmcwIgvdUC9qLWcKCi6gklUa1dM3ziD43YxYNURLKy0",
            "$y$j9T$salt1234$pUhEqzbmpNS2ajBn4Rs6YKqe5yOSUUbfowdnKWDhtr7",
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
            (
                "$gy$j9T$salt1234$cNq6pVc/DxAyB0YA/AIvh64QavKawWNgKnJpkk02HZ7",
                "gost-yescrypt",
            ),
            (
                "$7$CU..../....salt1234$Yg0piafS.82RvaSAv7O6jb2HG1rkAfUk/Hc67.8JuA8",
                "scrypt",
            ),
            ("abNANd1rDfiNc", "DES crypt"),
            ("$y$j9T$salt$", "yescrypt hash is malformed"),
            ("{SSHA}!!", "not base64"),
            ("$6$", "malformed"),
        ] {
            let e = verify(b"secret", hash).expect_err(hash);
            assert!(e.contains(said), "{hash}: {e}");
        }
    }

    /// How many threads of this process are in `openat` (from /proc; which file is not
    /// readable there). A check blocked opening a FIFO stays in it; other tests' opens
    /// pass in microseconds, so a count seen twice, 5 ms apart, is of blocked ones.
    fn opening() -> usize {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        let openat = nix::libc::SYS_openat.to_string();
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("syscall"))
                    .is_ok_and(|s| s.split(' ').next() == Some(openat.as_str()))
            })
            .count()
    }

    /// Ends the checks still blocked opening the FIFO (each non-blocking open for writing
    /// lets the waiting readers through to an empty file), so that a failed assertion
    /// ends the test instead of hanging the runtime's shutdown.
    struct Unblock(PathBuf);

    impl Drop for Unblock {
        fn drop(&mut self) {
            use std::os::unix::fs::OpenOptionsExt as _;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while opening() > 0 && std::time::Instant::now() < deadline {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(&self.0);
                std::thread::yield_now();
            }
        }
    }

    /// Checks take turns, one per core: with the user file a FIFO, each check blocks
    /// opening it until a writer comes; with one more check than cores, one waits for
    /// its turn outside, and is still waiting when the others have read and finished.
    #[tokio::test]
    async fn checks_take_turns_one_per_core() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("users");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let _unblock = Unblock(fifo.clone());
        let mut checks: Vec<_> = (0..=cores())
            .map(|_| tokio::spawn(check_in_turn(fifo.clone(), credentials_of("ann:pw"))))
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = 0;
        while seen < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} opening",
                opening()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let all_in = opening() == cores() && turns().available_permits() == 0;
            seen = if all_in { seen + 1 } else { 0 };
        }
        // A check whose client went away keeps its turn while it runs.
        checks.remove(0).abort();
        tokio::task::yield_now().await;
        assert_eq!(turns().available_permits(), 0);
        assert_eq!(opening(), cores());
        // A FIFO is one pipe: one reader gets the line, the others an empty file. The
        // readers keep their turns until the writer has closed: the last check opens the
        // FIFO after that, and waits for another writer.
        let write = |fifo: PathBuf| std::fs::write(fifo, "ann:{PLAIN}pw\n").expect("write");
        let first = fifo.clone();
        tokio::task::spawn_blocking(move || write(first))
            .await
            .expect("writer");
        let mut verdicts = Vec::new();
        while verdicts.len() < cores() - 1 {
            assert!(std::time::Instant::now() < deadline, "{verdicts:?}");
            let (finished, pending): (Vec<_>, Vec<_>) =
                checks.into_iter().partition(|c| c.is_finished());
            for c in finished {
                verdicts.push(c.await.expect("check"));
            }
            checks = pending;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(verdicts.len(), cores() - 1);
        assert_eq!(checks.len(), 1, "one check waited for its turn");
        tokio::task::spawn_blocking(move || write(fifo))
            .await
            .expect("writer");
        let last = checks.pop().expect("the last check");
        assert_eq!(last.await.expect("check"), Ok(Verdict::Passed));
    }

    fn credentials_of(pair: &str) -> Credentials {
        let mut headers = hyper::HeaderMap::new();
        let value = format!("Basic {}", BASE64.encode(pair.as_bytes()));
        headers.insert(hyper::header::AUTHORIZATION, value.parse().expect("header"));
        credentials(&headers).expect("credentials")
    }

    #[test]
    fn survey_names_the_lines_that_cannot_be_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            "# old:abNANd1rDfiNc\nann:{PLAIN}a\nold:abNANd1rDfiNc\r\nsc:$7$CU..../....x$y\n\
             ann:{PLAIN}appended\nann:abNANd1rDfiNc\n",
        )
        .expect("write");
        let said = survey(&path);
        assert_eq!(said.len(), 4, "{said:?}");
        assert!(said[0].contains(":3: user \"old\"") && said[0].contains("DES crypt"));
        assert!(said[1].contains(":4: user \"sc\"") && said[1].contains("scrypt"));
        for (i, line) in [(2, 5), (3, 6)] {
            let hidden = format!(":{line}: user \"ann\" is on line 2 already");
            assert!(said[i].contains(&hidden), "{said:?}");
        }
        let missing = survey(&dir.path().join("none"));
        assert!(missing[0].contains("gets 403"), "{missing:?}");
        let unreadable = survey(dir.path());
        assert!(unreadable[0].contains("gets 500"), "{unreadable:?}");
        std::fs::write(&path, "# nobody yet\n\n").expect("write");
        let empty = survey(&path);
        assert!(empty[0].contains("holds no user"), "{empty:?}");
    }

    #[test]
    fn the_file_is_read_as_nginx_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            "# admin:{PLAIN}commented\n\r\nadmin:{PLAIN}first:comment\nadmin:{PLAIN}second\n\
             ann:{PLAIN}crlf\r\nodd:abNANd1rDfiNc\nlast:{PLAIN}no-newline",
        )
        .expect("write");
        let check = |u: &str, p: &str| check(&path, u.as_bytes(), p.as_bytes());
        assert_eq!(check("admin", "first"), Verdict::Passed);
        assert!(matches!(check("admin", "second"), Verdict::Refused(m) if m.contains("mismatch")));
        assert!(matches!(check("# admin", "commented"), Verdict::Refused(_)));
        assert_eq!(check("ann", "crlf"), Verdict::Passed);
        assert_eq!(check("last", "no-newline"), Verdict::Passed);
        assert!(matches!(check("adm", "first"), Verdict::Refused(m) if m.contains("not found")));
        assert!(matches!(check("odd", "secret"), Verdict::Failed(m) if m.contains("DES crypt")));
        let missing = super::check(&dir.path().join("none"), b"a", b"b");
        assert!(matches!(missing, Verdict::Missing(m) if m.starts_with("open() ")));
    }
}
