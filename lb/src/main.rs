//! `gluu-lb`: nginx's command line habits (`-c FILE`, `-t`, `-s reload|stop|quit|reopen`),
//! then bind, drop privileges, and hand over to the library. Exit codes: 0 fine, 64
//! (EX_USAGE) bad configuration, 1 anything else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use gluu_common::{logging, process, signal};
use gluu_lb::{Balancer, Config, Control, GrammarError};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use tokio_util::sync::CancellationToken;

const EX_USAGE: u8 = 64;

/// jemalloc in place of glibc malloc: see the README (Dependencies).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// TLS load balancer for a Gluu cluster: serves the guide's nginx.conf (TLS on 443, the
/// redirect on 80, ip_hash stickiness for /identity, failover), keeps connections to the
/// nodes alive, and pins the nodes to the balancer's own certificate unless told otherwise.
#[derive(Parser, Debug)]
#[command(
    name = "gluu-lb",
    version = gluu_common::build::VERSION,
    after_long_help = "Signals: SIGHUP re-reads the configuration and certificates (listeners stay open; \
a file that does not load keeps the running one and the error is logged); SIGTERM, SIGQUIT and \
SIGINT stop gracefully (open requests get worker_shutdown_timeout, 30 s by default); SIGUSR1 \
reopens the access and error logs.\n\n\
Exit codes: 0 stopped cleanly or -t passed; 64 the configuration does not load; 1 anything else \
(a port in use).\n\n\
Under systemd (gluu-lb.service): Type=notify, READY/RELOADING/STOPPING and watchdog pings. \
Metrics: the `metrics ADDRESS:PORT;` directive (http block) serves /metrics and /status.\n\n\
See also: docs/migrating.md and the README in the gluu-ha sources; nginx(8)."
)]
struct Cli {
    /// nginx configuration file.
    #[arg(short = 'c', long = "conf", default_value = "/etc/nginx/nginx.conf")]
    config: PathBuf,

    /// Check the configuration (syntax, certificates, keys, upstream TLS) and print errors
    /// and security warnings; exit 0 only if gluu-lb would start with it.
    #[arg(short = 't', long = "test")]
    test: bool,

    /// `-t`, then print every file the configuration was read from (the main file and its
    /// includes, each once, as read) to standard output, as `nginx -T` does.
    #[arg(short = 'T', long = "test-dump")]
    dump: bool,

    /// With `-t` or `-T`: say nothing when the test passes but its warnings (nginx's `-q`).
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,

    /// Signal the running gluu-lb (its pid from the configuration's `pid` file).
    #[arg(short = 's', long = "signal", value_name = "SIGNAL")]
    signal: Option<Action>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Action {
    /// Re-read the configuration and certificates (SIGHUP).
    Reload,
    /// Stop, letting open requests finish (SIGTERM).
    Stop,
    /// Same as stop (SIGQUIT, nginx's graceful stop).
    Quit,
    /// Reopen the log files after logrotate (SIGUSR1).
    Reopen,
}

fn main() -> ExitCode {
    gluu_common::man::handle::<Cli>();
    let cli = Cli::parse();
    // Named in full in what -t and errors say, as nginx names it.
    let path = std::path::absolute(&cli.config).unwrap_or(cli.config);
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return config_failed(&path, &e),
    };
    if let Some(action) = cli.signal {
        return send(&config, action);
    }
    if cli.test || cli.dump {
        let sources = cli.dump.then(|| config.sources.clone());
        let tested = test(&path, config, cli.quiet);
        return match sources {
            Some(s) if tested == ExitCode::SUCCESS => dump(&s),
            _ => tested,
        };
    }
    let (level, output) = match &config.error_log {
        Some(l) => (l.level, l.path.clone()),
        None => (tracing::Level::INFO, None),
    };
    let error_log = match logging::init(level, output.as_deref()) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("gluu-lb: cannot open the error_log: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let balancer = match Balancer::prepare(config.clone()) {
        Ok(b) => b,
        Err(e) => return config_failed(&path, &e),
    };
    // The control plane: signals, reloads, health checks, metrics. Clients are served by
    // the worker threads that `Balancer::run` starts.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gluu-lb: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(balancer, &config, error_log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gluu-lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_failed(path: &Path, e: &GrammarError) -> ExitCode {
    eprintln!("gluu-lb: [emerg] {e}");
    eprintln!("gluu-lb: configuration file {} test failed", path.display());
    ExitCode::from(EX_USAGE)
}

/// `-t`: everything start-up checks except binding.
fn test(path: &Path, config: Config, quiet: bool) -> ExitCode {
    let balancer = match Balancer::prepare(config) {
        Ok(b) => b,
        Err(e) => return config_failed(path, &e),
    };
    let unreadable = match identity(&balancer.config()) {
        Ok(id) => unreadable_after_drop(&balancer.config(), id),
        Err(e) => {
            eprintln!("gluu-lb: [emerg] {e} in {}", path.display());
            eprintln!("gluu-lb: configuration file {} test failed", path.display());
            return ExitCode::from(EX_USAGE);
        }
    };
    for w in balancer.warnings() {
        eprintln!("gluu-lb: [warn] {w}");
    }
    for w in unreadable {
        eprintln!("gluu-lb: [warn] {w}");
    }
    if quiet {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "gluu-lb: the configuration file {} syntax is ok",
        path.display()
    );
    eprintln!(
        "gluu-lb: configuration file {} test is successful",
        path.display()
    );
    ExitCode::SUCCESS
}

/// `-T`'s listing, nginx's layout: `# configuration file PATH:`, the text as read, a blank
/// line; a file included twice is listed once.
fn dump(sources: &[gluu_lb::config::grammar::Source]) -> ExitCode {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut listed = std::collections::HashSet::new();
    let mut out = std::io::stdout().lock();
    let mut write = || {
        for s in sources.iter().filter(|s| listed.insert(&s.path)) {
            out.write_all(b"# configuration file ")?;
            out.write_all(s.path.as_os_str().as_bytes())?;
            out.write_all(b":\n")?;
            out.write_all(&s.text)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    match write() {
        // `gluu-lb -T | head` is fine.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("gluu-lb: writing the configuration out: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Who `user USER [GROUP]` runs gluu-lb as once it has bound its ports; as in nginx, no
/// GROUP means the group named as USER.
fn identity(config: &Config) -> Result<Option<(Uid, Gid)>, String> {
    let Some((user, group)) = &config.user else {
        return Ok(None);
    };
    let uid = process::lookup_user(user)?;
    let gid = match group {
        Some(g) => process::lookup_group(g)?,
        None => process::lookup_group(user).map_err(|e| {
            format!("{e}: `user {user};` means group {user} too, as in nginx; name the group, e.g. `user {user} nogroup;`")
        })?,
    };
    Ok(Some((uid, gid)))
}

/// What a reload (SIGHUP) re-reads that gluu-lb could not read any more once it runs as
/// `id`: the configuration file, certificates and keys. nginx's master process stays root
/// for this; gluu-lb is one process, so the files must be readable by the `user`.
fn unreadable_after_drop(config: &Config, id: Option<(Uid, Gid)>) -> Vec<String> {
    let Some((uid, gid)) = id else {
        return Vec::new();
    };
    let mut files: Vec<&Path> = config.sources.iter().map(|s| s.path.as_path()).collect();
    for s in &config.servers {
        files.extend(s.tls.certificates.iter().map(PathBuf::as_path));
        files.extend(s.tls.certificate_keys.iter().map(PathBuf::as_path));
        files.extend(s.tls.ticket_keys.iter().map(|(path, _)| path.as_path()));
        let client = &s.tls.client;
        for (path, _) in [&client.certificate, &client.trusted, &client.crl]
            .into_iter()
            .flatten()
        {
            files.push(path);
        }
        for l in &s.locations {
            let p = &l.settings;
            files.extend(p.ssl_trusted_certificate.as_deref());
            files.extend(p.ssl_crl.as_ref().map(|(path, _)| path.as_path()));
            files.extend(p.ssl_certificate.as_deref());
            files.extend(p.ssl_certificate_key.as_deref());
        }
    }
    files.sort();
    files.dedup();
    // Read at each request, as the `user`.
    let mut user_files: Vec<&Path> = config
        .servers
        .iter()
        .flat_map(|s| s.accesses().filter_map(|a| a.user_file))
        .collect();
    user_files.sort();
    user_files.dedup();
    let (user, group) = config
        .user
        .as_ref()
        .map_or(("", None), |(u, g)| (u.as_str(), g.as_deref()));
    let group = group.unwrap_or(user);
    let reload = "a reload (SIGHUP) would fail on it";
    let request = "every request that needs it would get 500 (auth_basic_user_file)";
    let files = files.into_iter().map(|f| (f, reload));
    files
        .chain(user_files.into_iter().map(|f| (f, request)))
        .filter(|(f, _)| !process::readable_as(f, uid, gid))
        .map(|(f, then)| {
            format!(
                "{} is not readable by user {user} (group {group}), whom gluu-lb runs as after \
                 binding: {then}; e.g. chgrp {group} {0} && chmod g+r {0}",
                f.display()
            )
        })
        .collect()
}

/// `-s`: signals the process whose pid the `pid` file holds.
fn send(config: &Config, action: Action) -> ExitCode {
    let Some(pid_path) = &config.pid else {
        eprintln!(
            "gluu-lb: [error] {} has no \"pid\" directive, so there is no process to signal; add \
             `pid /run/gluu-lb.pid;` or use `systemctl reload gluu-lb`",
            config.path.display()
        );
        return ExitCode::from(EX_USAGE);
    };
    let pid = match std::fs::read_to_string(pid_path) {
        Ok(text) => match text.trim().parse::<i32>() {
            Ok(pid) => pid,
            Err(_) => {
                eprintln!(
                    "gluu-lb: [error] invalid PID number \"{}\" in \"{}\"",
                    text.trim(),
                    pid_path.display()
                );
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!(
                "gluu-lb: [error] open() \"{}\" failed ({e}): is gluu-lb running?",
                pid_path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let signal = match action {
        Action::Reload => Signal::SIGHUP,
        Action::Stop => Signal::SIGTERM,
        Action::Quit => Signal::SIGQUIT,
        Action::Reopen => Signal::SIGUSR1,
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gluu-lb: [error] kill({pid}, {signal}) failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    balancer: Balancer,
    config: &Config,
    error_log: Option<logging::LogFile>,
) -> anyhow::Result<()> {
    let bound = balancer.bind().await?;
    let id = identity(config).map_err(anyhow::Error::msg)?;
    for w in unreadable_after_drop(config, id) {
        tracing::warn!("{w}");
    }
    // Written while still root, so that /run is writable (nginx does the same).
    let _pid = config
        .pid
        .as_deref()
        .map(process::PidFile::create)
        .transpose()?;
    process::drop_privileges(id.map(|i| i.0), id.map(|i| i.1)).map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    let access_logs = balancer.log_files();
    let reload = signal::install(shutdown.clone(), move || {
        let mut files = access_logs();
        files.extend(error_log.iter().cloned());
        files
    })?;
    balancer.run(bound, Control { shutdown, reload }).await
}
