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
    file: Arc<Mutex<File>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Opens (creates) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(open(path)?)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when both are the same open file (clones of one [`LogFile::open`]).
    pub fn same_file(&self, other: &LogFile) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
    }

    /// Appends one whole line in one write (an access log line).
    pub fn append(&self, line: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line)
    }

    /// Opens the file again by name (after logrotate moved the old one away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// One log line being written, under the file's lock.
#[derive(Debug)]
pub struct LogWriter<'a>(MutexGuard<'a, File>);

impl std::io::Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
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
            let log = LogFile {
                path: path.to_owned(),
                file: Arc::new(Mutex::new(open(path)?)),
            };
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
