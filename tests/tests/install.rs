//! `scripts/install.sh` and what it installs: binaries, man pages, the systemd units (checked
//! with `systemd-analyze verify`, their `systemd-analyze security` exposure as docs/systemd.md
//! records it) and the example configurations (each passes its binary's `-t` with no warning).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gluu_testkit::{Cert, repo, require, text_of};

const UNITS: [&str; 3] = [
    "gluu-lb.service",
    "gluu-tunnel@.service",
    "gluu-fsync.service",
];

/// Where `cargo test --workspace` put the daemons (next to this package's gluu-box).
fn built() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_gluu-box"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// Installs into `root` (prefix root/usr, sysconfdir root/etc).
fn install(root: &Path) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--prefix")
        .arg(root.join("usr"))
        .arg("--sysconfdir")
        .arg(root.join("etc"))
        .arg("--from")
        .arg(built())
        .output()
        .expect("run install.sh")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn install_puts_binaries_man_pages_units_and_examples_in_place() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let out = install(r);
    assert!(out.status.success(), "{}", text_of(&out));
    for bin in ["gluu-lb", "gluu-tunnel", "gluu-fsync"] {
        let path = r.join("usr/bin").join(bin);
        assert_eq!(mode(&path), 0o755, "{}", path.display());
        gluu_testkit::assert_version(path.to_str().expect("utf-8"), bin);
        assert_eq!(mode(&r.join(format!("usr/share/man/man8/{bin}.8"))), 0o644);
    }
    assert!(r.join("usr/share/man/man8/gluu-fsync-daemon.8").exists());
    for unit in UNITS {
        let path = r.join("etc/systemd/system").join(unit);
        assert_eq!(mode(&path), 0o644, "{}", path.display());
        let unit_text = std::fs::read_to_string(&path).expect("read unit");
        let bin = r.join("usr/bin");
        let execs: Vec<&str> = unit_text
            .lines()
            .filter(|l| l.starts_with("ExecStart") || l.starts_with("ExecReload=/"))
            .filter(|l| !l.contains("kill -HUP"))
            .collect();
        assert_eq!(execs.len(), 3, "{unit_text}");
        for line in execs {
            assert!(
                line.contains(&format!("={}/gluu-", bin.display())),
                "{line}"
            );
        }
    }
    for example in [
        "nginx.conf",
        "csync2.cfg",
        "stunnel/redis-server.conf",
        "stunnel/redis-client.conf",
    ] {
        assert!(
            r.join("usr/share/doc/gluu-ha/examples")
                .join(example)
                .exists(),
            "{example}"
        );
    }
    let logrotate = r.join("etc/logrotate.d/gluu-lb");
    assert_eq!(mode(&logrotate), 0o644);
    // An admin's own settings survive a second install.
    let default = r.join("etc/default/gluu-fsync");
    std::fs::write(&default, "GLUU_FSYNC_ARGS=\"-N node7\"\n").expect("write");
    std::fs::write(&logrotate, "/var/log/gluu-lb/*.log { weekly }\n").expect("write");
    let out = install(r);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(
        std::fs::read_to_string(&default).expect("read"),
        "GLUU_FSYNC_ARGS=\"-N node7\"\n"
    );
    assert_eq!(
        std::fs::read_to_string(&logrotate).expect("read"),
        "/var/log/gluu-lb/*.log { weekly }\n"
    );
    // Nonsense is refused with the usage's exit code.
    let out = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--prefx")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "{}", text_of(&out));
}

/// `systemd-analyze verify` exits 0 even on unknown keys: a clean unit prints nothing.
fn verify(units: &[PathBuf]) -> Output {
    Command::new(require("systemd-analyze"))
        .args(["verify", "--man=no"])
        .args(units)
        .output()
        .expect("run systemd-analyze")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = install(root.path());
    assert!(out.status.success(), "{}", text_of(&out));
    let dir = root.path().join("etc/systemd/system");
    let units: Vec<PathBuf> = UNITS.iter().map(|u| dir.join(u)).collect();
    let out = verify(&units);
    assert!(
        out.status.success() && text_of(&out).trim().is_empty(),
        "{}",
        text_of(&out)
    );
    // The check can fail: a misspelt key in a copy is reported.
    let broken = dir.join("broken.service");
    let unit = std::fs::read_to_string(&units[0]).expect("read");
    std::fs::write(&broken, unit.replace("NoNewPrivileges=", "NoNewPrivilege=")).expect("write");
    let out = verify(&[broken]);
    assert!(
        text_of(&out).contains("NoNewPrivilege"),
        "{}",
        text_of(&out)
    );
}

#[test]
fn security_exposure_is_what_the_docs_record() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = install(root.path());
    assert!(out.status.success(), "{}", text_of(&out));
    let docs = std::fs::read_to_string(repo().join("docs/systemd.md")).expect("docs/systemd.md");
    let dir = root.path().join("etc/systemd/system");
    for unit in UNITS {
        // A template is analysed as an instance, as systemd would run it.
        let name = unit.replace("@.", "@redis-server.");
        let instance = dir.join(&name);
        if name != unit {
            std::fs::copy(dir.join(unit), &instance).expect("copy");
        }
        let out = Command::new(require("systemd-analyze"))
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&instance)
            .output()
            .expect("run systemd-analyze security");
        let report = text_of(&out);
        let level = report
            .lines()
            .find_map(|l| {
                l.split(&format!("Overall exposure level for {name}: "))
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
        let row = format!("| `{unit}` | {level} |");
        assert!(
            docs.contains(&row),
            "docs/systemd.md should have the row {row:?}\n{report}"
        );
    }
}

/// Replaces the examples' system paths with ones under `dir`.
fn localize(example: &str, dir: &Path) -> String {
    let d = dir.display();
    std::fs::read_to_string(repo().join("examples").join(example))
        .expect("read example")
        .replace("/etc/nginx/ssl/", &format!("{d}/"))
        .replace("/var/log/gluu-lb/", &format!("{d}/"))
        .replace("/etc/stunnel/", &format!("{d}/"))
        .replace("/var/run/", &format!("{d}/"))
        .replace("/etc/csync2.key", &format!("{d}/csync2.key"))
        .replace("/opt/gluu-server", &format!("{d}/opt"))
        .replace("/var/lib/gluu-fsync", &format!("{d}/state"))
        .replace("197.122.32.42", "127.0.0.1")
        .replace("159.203.126.10:16379", "127.0.0.1:16380")
}

fn config_test(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run -t");
    let said = text_of(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.to_lowercase().contains("warn"), "{said}");
    said
}

#[test]
fn the_examples_pass_each_config_test_without_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cert = Cert::new(d, "httpd");
    std::fs::rename(&cert.combined, d.join("secureredis.pem")).expect("rename");
    for key in [d.join("secureredis.pem"), cert.key.clone()] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let bin = |name: &str| Command::new(built().join(name));

    let nginx = d.join("nginx.conf");
    std::fs::write(&nginx, localize("nginx.conf", d)).expect("write");
    config_test(bin("gluu-lb").arg("-t").arg("-c").arg(&nginx));

    for side in ["redis-server", "redis-client"] {
        let conf = d.join(format!("{side}.conf"));
        std::fs::write(&conf, localize(&format!("stunnel/{side}.conf"), d)).expect("write");
        config_test(bin("gluu-tunnel").arg("-t").arg(&conf));
    }

    let cfg = d.join("csync2.cfg");
    let cfg_text = localize("csync2.cfg", d);
    std::fs::write(&cfg, &cfg_text).expect("write");
    let out = bin("gluu-fsync")
        .arg("keygen")
        .arg(d.join("csync2.key"))
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{}", text_of(&out));
    for line in cfg_text.lines() {
        if let Some(path) = line.strip_prefix("include ") {
            let path = path.split(';').next().expect("path");
            std::fs::create_dir_all(path).expect("mkdir include");
        }
    }
    config_test(
        bin("gluu-fsync")
            .arg("-c")
            .arg(&cfg)
            .args(["-N", "159.203.126.10", "-t"]),
    );
    // The name comes from /etc/default/gluu-fsync, as the unit reads it.
    let default =
        std::fs::read_to_string(repo().join("examples/default/gluu-fsync")).expect("read");
    assert!(
        default.contains("GLUU_FSYNC_ARGS=\"-N 159.203.126.10\""),
        "{default}"
    );
}
