//! The command line: `-t` on the guide's csync2.cfg (paths changed) and on broken files,
//! `keygen`, and `--version`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

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
fn version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gluu-fsync "));
}
