//! `gluu-tunnel`: parse the command line, load and check the configuration, bind, drop
//! privileges, and hand over to the library. Exit codes: 0 fine, 64 (EX_USAGE) bad
//! configuration, 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gluu_common::{logging, process, signal};
use gluu_tunnel::{Config, Control, Tunnel};
use tokio_util::sync::CancellationToken;

const EX_USAGE: u8 = 64;

/// TLS tunnel for Redis: runs the services of an stunnel configuration file (the guide's
/// /etc/stunnel/redis-server.conf on the Redis host, redis-client.conf on each node),
/// pinning the peer to the certificate in `cert` unless told otherwise.
#[derive(Parser, Debug)]
#[command(
    name = "gluu-tunnel",
    version = gluu_common::build::VERSION,
    args_conflicts_with_subcommands = true,
    after_long_help = "Signals: SIGHUP re-reads the file and certificates (new connections use them; a \
file that does not load keeps the running configuration and the error is logged); SIGTERM and \
SIGINT stop accepting and give open connections TIMEOUTdrain; SIGUSR1 reopens the `output` \
log.\n\n\
Exit codes: 0 stopped cleanly or -t passed; 64 the configuration does not load; 1 anything else.\n\n\
Under systemd: one unit per file, gluu-tunnel@NAME.service runs /etc/stunnel/NAME.conf; \
Type=notify, READY/RELOADING/STOPPING and watchdog pings. Metrics: `metrics = ADDRESS:PORT` \
(global).\n\n\
See also: docs/migrating.md and the README in the gluu-ha sources; stunnel(8)."
)]
struct Cli {
    /// Check the configuration (syntax, certificates, keys) and print errors and security
    /// warnings; exit 0 only if gluu-tunnel would start with it.
    #[arg(short = 't', long = "test")]
    test: bool,

    /// stunnel configuration file.
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Redis AUTH + PING through a running client-mode service: prints PONG and the
    /// round-trip time, or why it failed (refused, TLS rejected, auth failed).
    Check {
        /// stunnel configuration file of the running tunnel.
        config: PathBuf,
        /// Service to go through (default: the first with `client = yes`).
        #[arg(long)]
        service: Option<String>,
        /// File whose first line is the Redis password (else $REDISCLI_AUTH, else none).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    gluu_common::man::handle::<Cli>();
    let cli = Cli::parse();
    if let Some(Command::Check {
        config,
        service,
        password_file,
        timeout,
    }) = cli.command
    {
        return check(&config, service.as_deref(), password_file, timeout);
    }
    let Some(path) = cli.config else {
        eprintln!(
            "gluu-tunnel: give a configuration file, e.g. /etc/stunnel/redis-client.conf (see --help)"
        );
        return ExitCode::from(EX_USAGE);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return config_failed(&path, &e),
    };
    if cli.test {
        return test(config);
    }
    let log = match logging::init(config.globals.debug, config.globals.output.as_deref()) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("gluu-tunnel: cannot open log output: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let tunnel = match Tunnel::prepare(config) {
        Ok(t) => t,
        Err(e) => return config_failed(&path, &e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gluu-tunnel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(tunnel, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gluu-tunnel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_failed(path: &std::path::Path, e: &gluu_tunnel::ConfigError) -> ExitCode {
    eprintln!("gluu-tunnel: {e}");
    eprintln!(
        "gluu-tunnel: configuration file {} test failed",
        path.display()
    );
    ExitCode::from(EX_USAGE)
}

/// `-t`: everything start-up checks except binding.
fn test(config: Config) -> ExitCode {
    let path = config.path.clone();
    let globals = config.globals.clone();
    let tunnel = match Tunnel::prepare(config) {
        Ok(t) => t,
        Err(e) => return config_failed(&path, &e),
    };
    let users = [
        globals
            .setuid
            .as_deref()
            .map(|u| process::lookup_user(u).map(|_| ())),
        globals
            .setgid
            .as_deref()
            .map(|g| process::lookup_group(g).map(|_| ())),
    ];
    for r in users.into_iter().flatten() {
        if let Err(e) = r {
            eprintln!("gluu-tunnel: {}: {e}", path.display());
            eprintln!(
                "gluu-tunnel: configuration file {} test failed",
                path.display()
            );
            return ExitCode::from(EX_USAGE);
        }
    }
    for w in tunnel.warnings() {
        eprintln!("gluu-tunnel: {w}");
    }
    for s in tunnel.services() {
        eprintln!("gluu-tunnel: {}", s.describe());
    }
    eprintln!(
        "gluu-tunnel: configuration file {} test is successful",
        path.display()
    );
    ExitCode::SUCCESS
}

async fn serve(tunnel: Tunnel, log: Option<logging::LogFile>) -> anyhow::Result<()> {
    let globals = tunnel.config().globals.clone();
    let bound = tunnel.bind().await?;
    let user = globals
        .setuid
        .as_deref()
        .map(process::lookup_user)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let group = globals
        .setgid
        .as_deref()
        .map(process::lookup_group)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    // The pid file is written while still root, so that /run is writable; as with nginx,
    // removing it at exit may then be left to the service manager.
    let _pid = globals
        .pid
        .as_deref()
        .map(process::PidFile::create)
        .transpose()?;
    process::drop_privileges(user, group).map_err(anyhow::Error::msg)?;
    if !globals.foreground {
        tracing::info!(
            "`foreground = no`: gluu-tunnel does not fork; run it under systemd (gluu-tunnel@.service)"
        );
    }
    let shutdown = CancellationToken::new();
    let reload = signal::install(shutdown.clone(), move || log.iter().cloned().collect())?;
    tunnel.run(bound, Control { shutdown, reload }).await
}

fn check(
    config: &std::path::Path,
    service: Option<&str>,
    password_file: Option<PathBuf>,
    timeout: u64,
) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return config_failed(config, &e),
    };
    let password = match password_file {
        Some(f) => match std::fs::read_to_string(&f) {
            Ok(text) => Some(text.lines().next().unwrap_or("").to_owned()),
            Err(e) => {
                eprintln!("gluu-tunnel check: {}: {e}", f.display());
                return ExitCode::from(EX_USAGE);
            }
        },
        None => std::env::var("REDISCLI_AUTH").ok(),
    };
    match gluu_tunnel::check::run(
        &cfg,
        service,
        password.as_deref(),
        Duration::from_secs(timeout),
    ) {
        Ok(p) => {
            println!(
                "PONG from Redis through [{}] at {} in {:.2} ms",
                p.service,
                p.via,
                p.round_trip.as_secs_f64() * 1000.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gluu-tunnel check: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
