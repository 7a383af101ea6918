//! Logging setup shared by the daemons: human-readable lines to stderr or appended to a file
//! (stunnel's `output`), at the configured level, which `RUST_LOG` overrides for debugging
//! one module. Colours only on a terminal. Under systemd (stderr is the journal's stream)
//! each line starts with its syslog priority (`<4>` for a warning) and carries no timestamp:
//! journald adds its own, and `journalctl -p warning` then finds our warnings. A log file
//! is reopened on SIGUSR1, which is what Debian's logrotate configuration for stunnel sends
//! after rotating.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::Format;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// The log file, shared with the subscriber so that it can be swapped for a fresh one.
#[derive(Clone, Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<Sink>>,
}

/// How often a log file that cannot be written is reported while it stays so.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Sink {
    file: File,
    failing: Option<Failing>,
}

impl Sink {
    fn new(file: File) -> Mutex<Sink> {
        Mutex::new(Sink {
            file,
            failing: None,
        })
    }
}

/// Writes to a file that have been failing since `since`.
#[derive(Debug)]
struct Failing {
    since: Instant,
    said: Instant,
    lost: u64,
}

/// What [`LogFile::append`] has to say about a file's writes: at most once per
/// [`REPORT_EVERY`] while they fail (a full disk must not turn into an error line per
/// request), and once when they work again.
#[derive(Debug, PartialEq, Eq)]
pub struct Trouble {
    /// The writes fail (still); `false` when they work again.
    pub failing: bool,
    /// The file's path and what happened, e.g. `/var/log/nginx/access.log: No space left on
    /// device (os error 28): 1 line lost; ...`.
    pub text: String,
}

fn lines(n: u64) -> String {
    if n == 1 {
        "1 line".to_owned()
    } else {
        format!("{n} lines")
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Opens (creates) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Arc::new(Sink::new(open(path)?)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when both are the same open file (clones of one [`LogFile::open`]).
    pub fn same_file(&self, other: &LogFile) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
    }

    /// Appends whole lines (access log lines) in one write. What cannot be written is lost
    /// and counted, not kept: memory stays bounded however long a disk stays full.
    pub fn append(&self, text: &[u8]) -> Option<Trouble> {
        self.append_at(text, Instant::now())
    }

    fn append_at(&self, text: &[u8], now: Instant) -> Option<Trouble> {
        use std::io::Write;
        let mut sink = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path.display();
        match sink.file.write_all(text) {
            Ok(()) => sink.failing.take().map(|f| Trouble {
                failing: false,
                text: format!(
                    "{path}: written again, after {} lost in {} s",
                    lines(f.lost),
                    now.duration_since(f.since).as_secs()
                ),
            }),
            Err(e) => {
                let lost = text.iter().filter(|&&b| b == b'\n').count() as u64;
                match &mut sink.failing {
                    None => {
                        sink.failing = Some(Failing {
                            since: now,
                            said: now,
                            lost,
                        });
                        Some(Trouble {
                            failing: true,
                            text: format!(
                                "{path}: {e}: {} lost; what cannot be written is dropped \
                                 until it can (said again every {} s while it lasts)",
                                lines(lost),
                                REPORT_EVERY.as_secs()
                            ),
                        })
                    }
                    Some(f) => {
                        f.lost += lost;
                        (now.duration_since(f.said) >= REPORT_EVERY).then(|| {
                            f.said = now;
                            Trouble {
                                failing: true,
                                text: format!(
                                    "{path}: {e}: {} lost in the {} s since writes began to fail",
                                    lines(f.lost),
                                    now.duration_since(f.since).as_secs()
                                ),
                            }
                        })
                    }
                }
            }
        }
    }

    /// Opens the file again by name (after logrotate moved the old one away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open(&self.path)?;
        self.file.lock().unwrap_or_else(|p| p.into_inner()).file = fresh;
        Ok(())
    }
}

/// One log line being written, under the file's lock.
#[derive(Debug)]
pub struct LogWriter<'a>(MutexGuard<'a, Sink>);

impl std::io::Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.file.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self.file.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Installs the global subscriber; returns the log file when logging to one. A second call
/// (tests run many daemons in one process) keeps the first subscriber and succeeds.
pub fn init(level: tracing::Level, output: Option<&Path>) -> std::io::Result<Option<LogFile>> {
    // rustls logs some peer quirks at warn for every connection (stunnel sends an IP address
    // as SNI); the daemons report handshake failures themselves, with the peer's address.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},rustls=error",
            level.as_str().to_ascii_lowercase()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match output {
        Some(path) => {
            let log = LogFile::open(path)?;
            let _ = builder.with_ansi(false).with_writer(log.clone()).try_init();
            Ok(Some(log))
        }
        None if stderr_is_journal() => {
            let format = format::format()
                .without_time()
                .with_target(false)
                .with_ansi(false);
            let _ = builder
                .event_format(Journald(format))
                .with_writer(std::io::stderr)
                .try_init();
            Ok(None)
        }
        None => {
            let _ = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init();
            Ok(None)
        }
    }
}

/// systemd sets `JOURNAL_STREAM=DEVICE:INODE` to the stream it connected stderr to
/// (sd_journal_stream_fd(3)); it is only ours while stderr is still that stream.
fn stderr_is_journal() -> bool {
    let Ok(want) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    want == format!("{}:{}", meta.dev(), meta.ino())
}

/// The plain line, prefixed by its syslog priority as sd-daemon(3) describes.
struct Journald(Format<format::Full, ()>);

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_reported_once_a_minute_and_its_recovery_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("access.log");
        std::os::unix::fs::symlink("/dev/full", &link).expect("symlink");
        let log = LogFile::open(&link).expect("open");
        let t0 = Instant::now();
        let first = log.append_at(b"a\nb\n", t0).expect("said at once");
        assert!(first.failing, "{first:?}");
        assert!(
            first
                .text
                .starts_with(&format!("{}: No space left on device", link.display()))
                && first.text.contains(": 2 lines lost;"),
            "{first:?}"
        );
        for s in 1..60 {
            assert_eq!(log.append_at(b"c\n", t0 + Duration::from_secs(s)), None);
        }
        let again = log
            .append_at(b"d\n", t0 + REPORT_EVERY + Duration::from_secs(1))
            .expect("a minute on");
        assert!(
            again.failing && again.text.contains(": 62 lines lost in the 61 s since"),
            "{again:?}"
        );
        // Space again (logrotate's SIGUSR1 reopens by name).
        std::fs::remove_file(&link).expect("unlink");
        log.reopen().expect("reopen");
        let back = log
            .append_at(b"e\n", t0 + Duration::from_secs(70))
            .expect("said once");
        assert_eq!(
            back,
            Trouble {
                failing: false,
                text: format!(
                    "{}: written again, after 62 lines lost in 70 s",
                    link.display()
                ),
            }
        );
        assert_eq!(log.append_at(b"f\n", t0 + Duration::from_secs(71)), None);
        assert_eq!(std::fs::read_to_string(&link).expect("read"), "e\nf\n");
    }
}
