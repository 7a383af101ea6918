//! The command line: `-t` on the guide's csync2.cfg (paths changed) and on broken files,
//! `keygen`, `--version`, and a running daemon's SIGHUP reload and sd_notify messages.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gluu-fsync");

/// The guide's file, with the key and the trees moved under `dir`.
fn guide_cfg(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "group gluucluster\n{{\nhost 159.203.126.10;\nhost 138.197.65.243;\n \nkey {d}/csync2.key;\ninclude {d}/opt/gluu-server/opt/gluu/jetty/identity/conf/shibboleth3/idp/;\ninclude {d}/opt/gluu-server/opt/gluu/jetty/identity/conf/shibboleth3/sp/;\ninclude {d}/opt/gluu-server/opt/shibboleth-idp/conf;\ninclude {d}/opt/gluu-server/opt/shibboleth-idp/metadata/;\ninclude {d}/opt/gluu-server/opt/shibboleth-idp/sp/;\ninclude {d}/opt/gluu-server/opt/shibboleth-idp/temp_metadata/;\ninclude {d}/opt/gluu-server/etc/gluu/conf/;\n \nexclude *~ .*;\n}}\n"
    )
}

#[test]
fn config_test_on_the_guides_file_and_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("csync2.cfg");
    std::fs::write(&cfg, guide_cfg(dir.path())).unwrap();
    let key = dir.path().join("csync2.key");
    let out = Command::new(BIN).arg("keygen").arg(&key).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(&key).unwrap().len(), 64);
    // keygen never replaces a key.
    let out = Command::new(BIN).arg("keygen").arg(&key).output().unwrap();
    assert!(!out.status.success());

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text) = run(&["-N", "159.203.126.10", "-t"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("test is successful"), "{text}");
    assert!(text.contains("does not exist on this node"), "{text}");
    assert!(text.contains("no \"auto\""), "{text}");

    let (code, text) = run(&["-N", "lb.example.org", "-t"]);
    assert_eq!(code, Some(64), "{text}");
    assert!(text.contains("not a host of any group"), "{text}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, text) = run(&["-N", "159.203.126.10", "-t"]);
    assert!(text.contains("readable by others"), "{text}");

    std::fs::write(
        &cfg,
        guide_cfg(dir.path()).replace("exclude *~ .*;", "exclude *~ .*;\nnossl * *;"),
    )
    .unwrap();
    let (code, text) = run(&["-N", "159.203.126.10", "-t"]);
    assert_eq!(code, Some(64), "{text}");
    assert!(text.contains(&format!("{}:16", cfg.display())), "{text}");
    assert!(text.contains("\"nossl\" is not supported"), "{text}");
}

#[test]
fn version_and_man_pages() {
    gluu_testkit::assert_version(BIN, "gluu-fsync");
    gluu_testkit::assert_man_pages(
        BIN,
        &[
            "gluu-fsync",
            "gluu-fsync-keygen",
            "gluu-fsync-daemon",
            "gluu-fsync-sync",
            "gluu-fsync-force",
            "gluu-fsync-test",
            "gluu-fsync-status",
            "gluu-fsync-conflicts",
            "gluu-fsync-resolve",
        ],
    );
}

#[test]
fn sighup_reloads_the_configuration_and_a_broken_file_changes_nothing() {
    let mut c = support::Cluster::new(2, "");
    let notify = gluu_testkit::NotifySocket::bind(c.dir.path());
    let limit = Duration::from_secs(10);
    c.start_with(
        0,
        &[
            ("NOTIFY_SOCKET", notify.path.as_os_str()),
            ("WATCHDOG_USEC", "200000".as_ref()),
        ],
        &[],
    );
    c.start(1);
    notify.wait_for("READY=1", limit);
    assert_eq!(notify.recv(limit).trim_end(), "WATCHDOG=1");
    let hup = |c: &support::Cluster| {
        let pid = c.nodes[0].proc.as_ref().expect("running").pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
    };

    std::fs::write(c.path(0, "before.log"), b"one").unwrap();
    c.wait_content(1, "before.log", b"one", limit);

    // *.log excluded from now on: a new one stays here, a plain file still goes.
    let text = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &c.config,
        text.replace("exclude *~ .*;", "exclude *~ .* *.log;"),
    )
    .unwrap();
    hup(&c);
    notify.wait_for("RELOADING=1", limit);
    notify.wait_for("READY=1", limit);
    c.log_line(0, "reloaded", limit);
    std::fs::write(c.path(0, "after.log"), b"two").unwrap();
    std::fs::write(c.path(0, "after.txt"), b"three").unwrap();
    c.wait_content(1, "after.txt", b"three", limit);
    assert!(!c.path(1, "after.log").exists());

    // A file that does not load: logged with its place, the running configuration stays.
    std::fs::write(&c.config, format!("{text}bogus;\n")).unwrap();
    hup(&c);
    let line = c.log_line(0, "keeping the running configuration", limit);
    assert!(line.contains("csync2.cfg:"), "{line}");
    std::fs::write(c.path(0, "still.log"), b"four").unwrap();
    std::fs::write(c.path(0, "still.txt"), b"five").unwrap();
    c.wait_content(1, "still.txt", b"five", limit);
    assert!(!c.path(1, "still.log").exists());
    // Still fed after all that.
    notify.wait_for("WATCHDOG=1", limit);
}
