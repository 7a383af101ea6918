//! `gluu-fsync`: parse the command line, read the configuration, and either run the daemon
//! or one admin command (in-process, or through the running daemon's control socket).
//! Exit codes: 0 fine / in sync, 2 out of sync, 64 (EX_USAGE) bad configuration, 1 error.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gluu_common::{logging, signal};
use gluu_fsync::commands::{self, Request};
use gluu_fsync::daemon::{self, Options};
use gluu_fsync::wire::Timeouts;
use gluu_fsync::{Config, Node};
use nix::fcntl::{Flock, FlockArg};
use tokio_util::sync::CancellationToken;

const EX_USAGE: u8 = 64;

/// File replication for a Gluu cluster, from the guide's csync2 configuration: a daemon on
/// every node pushes each change to every peer within a second, over TLS 1.3, with the group
/// key proven (never sent) and every write crash-safe.
#[derive(Parser, Debug)]
#[command(
    name = "gluu-fsync",
    version = gluu_common::build::VERSION,
    after_long_help = "While a daemon runs it holds the state directory; the other commands then go \
through its control socket (STATE/control.sock) and act on the live index.\n\n\
Signals (daemon): SIGHUP re-reads the configuration (one that fails -t is logged and changes \
nothing); SIGTERM and SIGINT stop (exchanges in flight get 10 s, then the index is stored); \
SIGUSR1 reopens --log.\n\n\
Exit codes: 0 done / in sync; 2 out of sync (differences, pending changes, conflicts); 64 the \
configuration does not load; 1 any other error.\n\n\
Under systemd (gluu-fsync.service): Type=notify, READY/RELOADING/STOPPING and watchdog pings; \
this node's -N goes in /etc/default/gluu-fsync.\n\n\
See also: docs/migrating.md and the README in the gluu-ha sources; csync2(8)."
)]
struct Cli {
    /// csync2 configuration file.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/csync2.cfg",
        global = true
    )]
    config: PathBuf,

    /// This node's name, as in the `host` lines (csync2 -N); default: the host name.
    #[arg(short = 'N', long = "name", global = true)]
    name: Option<String>,

    /// Where the index, this node's certificate and the control socket live.
    #[arg(long, default_value = "/var/lib/gluu-fsync", global = true)]
    state_dir: PathBuf,

    /// Seconds a peer may take to connect and finish the TLS handshake.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    handshake_timeout_secs: u64,

    /// Seconds a peer may take for each read or write in the middle of an exchange.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    io_timeout_secs: u64,

    /// Check the configuration: errors (file:line) and warnings; exit 0 only if this node
    /// would start with it, 64 if not.
    #[arg(short = 't', long = "test-config")]
    test_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a new group key (csync2 -k), mode 0600. Never replaces an existing file.
    Keygen { file: PathBuf },
    /// Serve peers, watch the included trees, push every change (run this under systemd).
    Daemon {
        /// Listen here instead of on this node's `host` address and port.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Quiet time after a change before it is pushed, in milliseconds.
        #[arg(long, default_value_t = 50)]
        debounce_ms: u64,
        /// Push at the latest this long after the first change, in milliseconds.
        #[arg(long, default_value_t = 500)]
        max_delay_ms: u64,
        /// Full rescan and exchange with every peer this often, in seconds.
        #[arg(long, default_value_t = 60)]
        rescan_secs: u64,
        /// Peer connections served at once; more wait in the listen queue.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// Log to this file (reopened on SIGUSR1) instead of stderr.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// One pass (csync2 -x): push and pull with every peer, then exit.
    Sync {
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// These local versions win the next sync on every peer (csync2 -f, -r).
    Force {
        /// Everything below the given directories too.
        #[arg(short = 'r', long)]
        recursive: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Compare with every peer and list differences (csync2 -T); exit 0 in sync, 2 not.
    Test { paths: Vec<PathBuf> },
    /// Per peer: reachable, last exchange, pending changes, conflicts; exit 0 in sync.
    Status,
    /// List unsettled conflicts.
    Conflicts,
    /// Settle a conflict: keep this node's version or the peer's.
    Resolve {
        #[arg(long, value_enum)]
        keep: Keep,
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Keep {
    Local,
    Remote,
}

fn main() -> ExitCode {
    gluu_common::man::handle::<Cli>();
    let cli = Cli::parse();
    if let Some(Command::Keygen { file }) = &cli.command {
        return match gluu_fsync::keygen(file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gluu-fsync: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gluu-fsync: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let name = match cli.name.clone() {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if cli.test_config {
        let (errors, warnings) = gluu_fsync::check(&config, &name);
        for w in &warnings {
            eprintln!("gluu-fsync: [warn] {w}");
        }
        for e in &errors {
            eprintln!("gluu-fsync: [emerg] {e}");
        }
        if errors.is_empty() {
            eprintln!(
                "gluu-fsync: the configuration file {} syntax is ok",
                cli.config.display()
            );
            eprintln!(
                "gluu-fsync: configuration file {} test is successful",
                cli.config.display()
            );
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "gluu-fsync: configuration file {} test failed",
            cli.config.display()
        );
        return ExitCode::from(EX_USAGE);
    }
    let Some(command) = cli.command else {
        eprintln!("gluu-fsync: a subcommand is needed (see --help)");
        return ExitCode::from(EX_USAGE);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gluu-fsync: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeouts = Timeouts {
        handshake: Duration::from_secs(cli.handshake_timeout_secs),
        io: Duration::from_secs(cli.io_timeout_secs),
    };
    let open = |config: Config| {
        Node::open(config, &name, &cli.state_dir).map(|n| n.with_timeouts(timeouts))
    };
    match runtime.block_on(run(config, &name, &cli.state_dir, &open, command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("gluu-fsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Hold the state directory: one process at a time works on an index.
fn lock(state_dir: &Path) -> anyhow::Result<Option<Flock<File>>> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("state directory {}", state_dir.display()))?;
    let file = File::create(state_dir.join("lock"))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// `open` makes this node from a configuration, with the command line's timeouts.
async fn run(
    config: Config,
    name: &str,
    state_dir: &Path,
    open: &dyn Fn(Config) -> Result<Node, String>,
    command: Command,
) -> anyhow::Result<u8> {
    let request = match command {
        Command::Daemon {
            listen,
            debounce_ms,
            max_delay_ms,
            rescan_secs,
            max_connections,
            log,
        } => {
            let _log = logging::init(tracing::Level::INFO, log.as_deref())?;
            let Some(_lock) = lock(state_dir)? else {
                anyhow::bail!("another gluu-fsync daemon holds {}", state_dir.display());
            };
            let file = config.file.clone();
            let mut node = Arc::new(open(config).map_err(anyhow::Error::msg)?);
            let mut listener = Arc::new(
                tokio::net::TcpListener::bind(listen.unwrap_or(node.listen))
                    .await
                    .with_context(|| {
                        format!("cannot listen on {}", listen.unwrap_or(node.listen))
                    })?,
            );
            tracing::info!("listening on {}", listener.local_addr()?);
            let socket = daemon::control_socket(state_dir);
            let _ = std::fs::remove_file(&socket);
            let control = Arc::new(
                tokio::net::UnixListener::bind(&socket)
                    .with_context(|| format!("control socket {}", socket.display()))?,
            );
            let shutdown = CancellationToken::new();
            let logs = _log.clone();
            let mut reload =
                signal::install(shutdown.clone(), move || logs.clone().into_iter().collect())?;
            let load = || {
                let config = Config::load(&file).map_err(|e| e.to_string())?;
                let (errors, _) = gluu_fsync::check(&config, name);
                match errors.is_empty() {
                    true => Ok(config),
                    false => Err(format!("{}: {}", config.file.display(), errors.join("; "))),
                }
            };
            let options = Options {
                debounce: Duration::from_millis(debounce_ms),
                max_delay: Duration::from_millis(max_delay_ms.max(debounce_ms)),
                rescan: Duration::from_secs(rescan_secs.max(1)),
                max_connections: max_connections as usize,
                ..Options::default()
            };
            loop {
                let exit = daemon::run(
                    node.clone(),
                    listener.clone(),
                    control.clone(),
                    &shutdown,
                    &mut reload,
                    &load,
                    &options,
                )
                .await?;
                let daemon::Exit::Reload(new) = exit else {
                    break;
                };
                // The old run stored its indexes; open them again with the new groups. A
                // configuration that cannot be opened (an address that no longer resolves)
                // leaves the previous one running.
                node = Arc::new(match open(*new) {
                    Ok(fresh) => {
                        tracing::info!("reloaded {}", file.display());
                        fresh
                    }
                    Err(e) => {
                        tracing::error!("{e}; keeping the running configuration");
                        open(node.config.clone()).map_err(anyhow::Error::msg)?
                    }
                });
                let wanted = listen.unwrap_or(node.listen);
                if wanted != listener.local_addr()? {
                    match tokio::net::TcpListener::bind(wanted).await {
                        Ok(l) => {
                            tracing::info!("listening on {wanted}");
                            listener = Arc::new(l);
                        }
                        Err(e) => tracing::error!(
                            "cannot listen on {wanted}: {e}; still listening on {}",
                            listener.local_addr()?
                        ),
                    }
                }
            }
            let _ = std::fs::remove_file(&socket);
            return Ok(0);
        }
        Command::Keygen { .. } => unreachable!("handled before the configuration is read"),
        Command::Sync { dry_run } => Request::Sync { dry_run },
        Command::Force { recursive, paths } => Request::Force {
            paths: absolute(paths)?,
            recursive,
        },
        Command::Test { paths } => Request::Test {
            paths: absolute(paths)?,
        },
        Command::Status => Request::Status,
        Command::Conflicts => Request::Conflicts,
        Command::Resolve { keep, path } => Request::Resolve {
            path: absolute(vec![path])?.remove(0),
            keep_remote: matches!(keep, Keep::Remote),
        },
    };
    let _log = logging::init(tracing::Level::WARN, None)?;
    let reply = match lock(state_dir)? {
        Some(_lock) => {
            let node = open(config).map_err(anyhow::Error::msg)?;
            commands::run(&node, request).await
        }
        None => daemon::ask(state_dir, &request).await?,
    };
    print!("{}", reply.output);
    Ok(u8::try_from(reply.code).unwrap_or(1))
}

/// Paths as the admin typed them, made absolute against the current directory.
fn absolute(paths: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    let cwd = std::env::current_dir()?;
    Ok(paths.into_iter().map(|p| cwd.join(p)).collect())
}
