//! A request's path as nginx sees it (`ngx_http_parse_complex_uri`, `merge_slashes on`):
//! `%XX` decoded, `//` merged, `.` and `..` segments resolved. Locations are matched
//! against that path, and a `proxy_pass` with a URI part sends it on (escaped again when the
//! client escaped anything). A `..` above the root, a bad or truncated escape and `%00` are
//! a 400, as in nginx.
//!
//! nginx's details kept: a decoded `%`, `#` or `?` (`%25`, `%23`, `%3F`) stands for itself,
//! while any other decoded byte counts as if sent plain, so `%2F` is a slash and `%2E%2E` a
//! `..`.

use std::borrow::Cow;

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the path does not start with \"/\"")]
    NotAbsolute,
    #[error("a \"%\" escape is not two hex digits")]
    BadEscape,
    #[error("the path holds %00")]
    Nul,
    #[error("a \"..\" segment climbs above the root")]
    AboveRoot,
}

/// A request path, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path<'a> {
    /// nginx's `$uri`: bytes, since `%FF` decodes to a byte no string can hold; the
    /// request's own when there was nothing to change (nearly always).
    pub bytes: Cow<'a, [u8]>,
    /// The client escaped something (nginx's `quoted_uri`): what goes to a node is
    /// escaped again.
    pub quoted: bool,
}

#[derive(Clone, Copy)]
enum State {
    Usual,
    /// Just after a `/`.
    Slash,
    /// After `/.`.
    Dot,
    /// After `/..`.
    DotDot,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Drops the `/..` that `out` ends with and the segment before it, keeping that segment's
/// leading `/`.
fn climb(out: &mut Vec<u8>) -> Result<(), Invalid> {
    let before = out
        .len()
        .checked_sub(3)
        .filter(|n| *n > 0)
        .ok_or(Invalid::AboveRoot)?;
    let slash = out[..before]
        .iter()
        .rposition(|&c| c == b'/')
        .ok_or(Invalid::AboveRoot)?;
    out.truncate(slash + 1);
    Ok(())
}

/// No escape, no empty segment but a trailing one, no `.` or `..` segment: the path
/// normalizes to itself (the guide's `/oxauth/.well-known/...` included).
fn unchanged(raw: &[u8]) -> bool {
    if raw.contains(&b'%') {
        return false;
    }
    let mut segments = raw[1..].split(|&b| b == b'/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if (s.is_empty() && !last) || s == b"." || s == b".." {
            return false;
        }
    }
    true
}

/// Normalizes `path` (without its query) as nginx does before choosing a location;
/// `merge_slashes` (nginx's, on by default) merges `//` into one.
pub fn normalize(path: &str, merge_slashes: bool) -> Result<Path<'_>, Invalid> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(Invalid::NotAbsolute);
    }
    if unchanged(raw) {
        return Ok(Path {
            bytes: Cow::Borrowed(raw),
            quoted: false,
        });
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut quoted = false;
    let mut state = State::Usual;
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        let mut ch = b;
        if b == b'%' {
            quoted = true;
            let (Some(hi), Some(lo)) = (
                raw.get(i).copied().and_then(hex),
                raw.get(i + 1).copied().and_then(hex),
            ) else {
                return Err(Invalid::BadEscape);
            };
            i += 2;
            ch = (hi << 4) | lo;
            match ch {
                0 => return Err(Invalid::Nul),
                b'%' | b'#' | b'?' => {
                    out.push(ch);
                    state = State::Usual;
                    continue;
                }
                _ => {}
            }
        }
        state = match (state, ch) {
            (State::Usual, b'/') => {
                out.push(ch);
                State::Slash
            }
            (State::Slash, b'/') => {
                if !merge_slashes {
                    out.push(ch);
                }
                State::Slash
            }
            (State::Slash, b'.') => {
                out.push(ch);
                State::Dot
            }
            (State::Dot, b'/') => {
                out.pop();
                State::Slash
            }
            (State::Dot, b'.') => {
                out.push(ch);
                State::DotDot
            }
            (State::DotDot, b'/') => {
                climb(&mut out)?;
                State::Slash
            }
            _ => {
                out.push(ch);
                State::Usual
            }
        };
    }
    match state {
        State::Dot => {
            out.pop();
        }
        State::DotDot => climb(&mut out)?,
        State::Usual | State::Slash => {}
    }
    Ok(Path {
        bytes: Cow::Owned(out),
        quoted,
    })
}

/// nginx's `NGX_ESCAPE_URI` set (Debian's nginx 1.22 has RFC 3986's): controls, space, DEL
/// and every byte above it, `#`, `%`, `?`, and the characters RFC 3986 has no place for
/// in a URI: `"`, `<`, `>`, `\`, `^`, the backtick, `{`, `|`, `}`.
pub const ESCAPE_URI: &[u8] = b"\"#%<>?\\^`{|}";
/// nginx's `NGX_ESCAPE_ARGS` set: [`ESCAPE_URI`]'s, and `&`, `+`, `;`.
pub const ESCAPE_ARGS: &[u8] = b"\"#%&+;<>?\\^`{|}";

/// `bytes` onto `out` as nginx's `ngx_escape_uri` writes them: controls, space, DEL, the
/// bytes above it and `specials` (a set above) as `%XX`.
pub fn escape(bytes: &[u8], specials: &[u8], out: &mut String) {
    for &b in bytes {
        if b <= b' ' || specials.contains(&b) || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
}

/// `$arg_NAME` of `request_uri`: its query's first `NAME=` pair, the name without regard
/// to case, the value as sent.
pub fn arg<'u>(request_uri: &'u str, name: &str) -> Option<&'u str> {
    let (_, args) = request_uri.split_once('?')?;
    args.split('&').find_map(|pair| {
        let (n, v) = pair.split_at_checked(name.len())?;
        n.eq_ignore_ascii_case(name).then(|| v.strip_prefix('='))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, Invalid> {
        normalize(p, true).map(|p| String::from_utf8_lossy(&p.bytes).into_owned())
    }

    #[test]
    fn as_nginx_normalizes() {
        for (raw, want) in [
            ("/oxauth/x", "/oxauth/x"),
            ("//oxauth///x//", "/oxauth/x/"),
            ("/%6Fxauth/x", "/oxauth/x"),
            ("/oxauth/../identity/y", "/identity/y"),
            ("/oxauth/%2e%2E/identity/y", "/identity/y"),
            ("/oxauth/%2F%2fx", "/oxauth/x"),
            ("/oxauth/./x/.", "/oxauth/x/"),
            ("/oxauth/x/..", "/oxauth/"),
            ("/a/b/../../c", "/c"),
            ("/a/.../b/..c/.d", "/a/.../b/..c/.d"),
            ("/a%3Fb%23c%25d", "/a?b#c%d"),
            ("/a%3f/../b", "/b"),
            ("/%25%32%65", "/%2e"),
            ("/a%20b+c", "/a b+c"),
            ("/", "/"),
            ("/.", "/"),
        ] {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
        assert_eq!(
            *normalize("/caf%E9", true).expect("valid").bytes,
            *b"/caf\xe9"
        );
        for same in ["/a/b.c", "/", "/a/", "/.well-known/x", "/a/..b/.c/..."] {
            let p = normalize(same, true).expect("valid");
            assert!(matches!(p.bytes, Cow::Borrowed(_)), "{same}");
        }
        assert!(normalize("/%41", true).expect("valid").quoted);
        assert!(!normalize("/./a//b", true).expect("valid").quoted);
        for (raw, why) in [
            ("/..", Invalid::AboveRoot),
            ("/../a", Invalid::AboveRoot),
            ("/a/../..", Invalid::AboveRoot),
            ("/%2e%2e/a", Invalid::AboveRoot),
            ("/a%zz", Invalid::BadEscape),
            ("/a%4", Invalid::BadEscape),
            ("/a%", Invalid::BadEscape),
            ("/a%00b", Invalid::Nul),
            ("*", Invalid::NotAbsolute),
        ] {
            assert_eq!(norm(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn escapes_what_nginx_escapes() {
        let bytes = b"/a b#c%d?e\x01\x7f\xc3\xa9+/~!$&'()*,;=:@\"<>\\^`{|}[]-._";
        let (mut uri, mut args) = (String::new(), String::new());
        escape(bytes, ESCAPE_URI, &mut uri);
        escape(bytes, ESCAPE_ARGS, &mut args);
        assert_eq!(
            uri,
            "/a%20b%23c%25d%3Fe%01%7F%C3%A9+/~!$&'()*,;=:@%22%3C%3E%5C%5E%60%7B%7C%7D[]-._"
        );
        assert_eq!(
            args,
            "/a%20b%23c%25d%3Fe%01%7F%C3%A9%2B/~!$%26'()*,%3B=:@%22%3C%3E%5C%5E%60%7B%7C%7D[]-._"
        );
    }
}
