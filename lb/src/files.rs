//! Files a location without `proxy_pass` serves from `root` or `alias` (nginx's static
//! module, the part an error page or a maintenance page needs): GET and HEAD, the type
//! from `types`, `Last-Modified` and nginx's `ETag`, `index.html` for a directory, a
//! redirect to add the `/` a directory's URI lacks. The file streams in 64 KiB reads.
//!
//! Not done (each answered as a whole `200`): ranges and conditional requests.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio_util::io::ReaderStream;

use crate::body::{self, Body};

/// What a request for a file comes to.
#[derive(Debug)]
pub enum Served {
    /// The file, its headers set; the body empty for a HEAD.
    File(Response<Body>),
    /// An error status (404, 403, 405, 500) for `error_page` and the log.
    Failed(StatusCode),
    /// A directory asked for without its `/`: redirected to the path with it.
    Slash,
}

/// The file for `rel` (the request path, or its part after an `alias` location's prefix)
/// under `dir`, joined as nginx joins them: as strings.
pub fn path_of(dir: &Path, rel: &[u8]) -> PathBuf {
    let mut p = dir.as_os_str().to_owned().into_vec();
    p.extend_from_slice(rel);
    PathBuf::from(OsString::from_vec(p))
}

/// Serves `file` to a `method` request, `content_type` from the location's `types`.
pub async fn serve(
    file: PathBuf,
    method: &Method,
    content_type: &str,
    log_not_found: bool,
) -> Served {
    if !matches!(*method, Method::GET | Method::HEAD | Method::POST) {
        return Served::Failed(StatusCode::METHOD_NOT_ALLOWED);
    }
    let index = file.as_os_str().as_encoded_bytes().ends_with(b"/");
    let file = if index { file.join("index.html") } else { file };
    let (f, meta) = match open(&file).await {
        Ok(x) => x,
        // nginx: "directory index of ... is forbidden" when there is no index file.
        Err(e) if index && e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(
                "directory index of \"{}\" is forbidden",
                dir_of(&file).display()
            );
            return Served::Failed(StatusCode::FORBIDDEN);
        }
        Err(e) => return Served::Failed(failure(&file, &e, log_not_found)),
    };
    if meta.is_dir() {
        return if index {
            Served::Failed(StatusCode::FORBIDDEN)
        } else {
            Served::Slash
        };
    }
    if !meta.is_file() {
        tracing::error!("\"{}\" is not a regular file", file.display());
        return Served::Failed(StatusCode::NOT_FOUND);
    }
    if *method == Method::POST {
        return Served::Failed(StatusCode::METHOD_NOT_ALLOWED);
    }
    let content_type = if index { "text/html" } else { content_type };
    let mut resp = Response::new(if *method == Method::HEAD {
        body::empty()
    } else {
        let chunks = ReaderStream::with_capacity(f, 64 << 10);
        StreamBody::new(chunks.map_ok(Frame::data).map_err(Into::into)).boxed()
    });
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
    let mtime = meta.mtime().max(0);
    if let Ok(t) = meta.modified()
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t))
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    // nginx's: the modification time and the length, in hex.
    if let Ok(v) = HeaderValue::from_str(&format!("\"{mtime:x}-{:x}\"", meta.len())) {
        h.insert(header::ETAG, v);
    }
    Served::File(resp)
}

/// Opens `file` without waiting on a FIFO or device, and what it is once opened (so that
/// a file swapped between a check and the open cannot pass for another).
async fn open(file: &Path) -> std::io::Result<(tokio::fs::File, std::fs::Metadata)> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
    let f = tokio::fs::OpenOptions::from(o).open(file).await?;
    let meta = f.metadata().await?;
    Ok((f, meta))
}

fn dir_of(index: &Path) -> &Path {
    index.parent().unwrap_or(index)
}

/// The status for a file that could not be opened, logged as nginx logs it (a missing
/// one only with `log_not_found`).
fn failure(file: &Path, e: &std::io::Error, log_not_found: bool) -> StatusCode {
    use std::io::ErrorKind::{
        InvalidFilename, InvalidInput, NotADirectory, NotFound, PermissionDenied,
    };
    match e.kind() {
        NotFound | NotADirectory | InvalidInput | InvalidFilename => {
            if log_not_found {
                tracing::error!("open() \"{}\" failed ({e})", file.display());
            }
            StatusCode::NOT_FOUND
        }
        PermissionDenied => {
            tracing::error!("open() \"{}\" failed ({e})", file.display());
            StatusCode::FORBIDDEN
        }
        _ => {
            tracing::error!("open() \"{}\" failed ({e})", file.display());
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn status(file: PathBuf, method: Method) -> Result<Response<Body>, String> {
        match serve(file, &method, "text/plain", true).await {
            Served::File(r) => Ok(r),
            Served::Failed(s) => Err(s.as_str().to_owned()),
            Served::Slash => Err("slash".to_owned()),
        }
    }

    #[test]
    fn paths_join_as_strings() {
        assert_eq!(
            path_of(Path::new("/srv/www"), b"/a.html"),
            Path::new("/srv/www/a.html")
        );
        assert_eq!(
            path_of(Path::new("/srv/m/"), b"a.html"),
            Path::new("/srv/m/a.html")
        );
        assert_eq!(
            path_of(Path::new("/srv/m"), b"a.html"),
            Path::new("/srv/ma.html")
        );
    }

    #[tokio::test]
    async fn files_directories_and_what_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("page.html"), "maintenance\n").expect("write");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::fs::create_dir(d.join("site")).expect("mkdir");
        std::fs::write(d.join("site/index.html"), "<p>index</p>").expect("write");
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");

        let r = status(d.join("page.html"), Method::GET).await.expect("200");
        let h = r.headers();
        assert_eq!(h[header::CONTENT_LENGTH], "12");
        assert_eq!(h[header::CONTENT_TYPE], "text/plain");
        let meta = std::fs::metadata(d.join("page.html")).expect("stat");
        assert_eq!(h[header::ETAG], format!("\"{:x}-c\"", meta.mtime()));
        assert!(h.contains_key(header::LAST_MODIFIED));
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"maintenance\n");

        let head = status(d.join("page.html"), Method::HEAD)
            .await
            .expect("200");
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "12");
        assert!(
            head.into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .is_empty()
        );

        let index = status(path_of(d, b"/site/"), Method::GET)
            .await
            .expect("index");
        assert_eq!(index.headers()[header::CONTENT_TYPE], "text/html");
        assert_eq!(
            status(d.join("site"), Method::GET).await.unwrap_err(),
            "slash"
        );
        assert_eq!(
            status(path_of(d, b"/sub/"), Method::GET).await.unwrap_err(),
            "403"
        );
        assert_eq!(
            status(d.join("nothing"), Method::GET).await.unwrap_err(),
            "404"
        );
        assert_eq!(
            status(path_of(d, b"/page.html/x"), Method::GET)
                .await
                .unwrap_err(),
            "404"
        );
        assert_eq!(
            status(path_of(d, b"/a\0b"), Method::GET).await.unwrap_err(),
            "404"
        );
        assert_eq!(
            status(d.join("fifo"), Method::GET).await.unwrap_err(),
            "404"
        );
        assert_eq!(
            status(d.join("page.html"), Method::POST).await.unwrap_err(),
            "405"
        );
        assert_eq!(
            status(d.join("nothing"), Method::POST).await.unwrap_err(),
            "404"
        );
        assert_eq!(
            status(d.join("page.html"), Method::PUT).await.unwrap_err(),
            "405"
        );
    }
}
