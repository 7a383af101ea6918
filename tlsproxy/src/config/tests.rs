//! Parsing and validation: the guide's files, stunnel's grammar, and every error class
//! naming its file and line.

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.conf");
    std::fs::write(&path, text).expect("write");
    Config::load(&path)
}

fn err(text: &str) -> String {
    let e = load(text).expect_err("should be rejected");
    // Every error names the file; line-level ones also the line.
    assert!(e.at.contains("t.conf"), "{e}");
    e.to_string()
}

#[test]
fn guide_server_file_as_written() {
    let c = load(
        "cert = /etc/stunnel/secureredis.pem\npid = /var/run/stunnel.pid\n[redis]\n\
         accept = 127.0.0.1:16379\nconnect = 127.0.0.1:6379\n",
    )
    .expect("guide's redis-server.conf");
    let s = &c.services[0];
    assert_eq!(s.name, "redis");
    assert_eq!(s.mode, Mode::Server);
    assert_eq!(s.accept, "127.0.0.1:16379".parse().expect("addr"));
    assert_eq!(
        s.connect,
        vec![Target {
            host: "127.0.0.1".into(),
            port: 6379
        }]
    );
    assert_eq!(
        s.tls.cert.as_deref(),
        Some(Path::new("/etc/stunnel/secureredis.pem"))
    );
    assert_eq!(
        c.globals.pid.as_deref(),
        Some(Path::new("/var/run/stunnel.pid"))
    );
    assert!(!s.tls.verification_configured());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn guide_node_file_without_client_yes_is_flagged() {
    let c = load(
        "cert = /etc/stunnel/secureredis.pem\npid = /var/run/stunnel.pid\n[redis]\n\
         accept = 127.0.0.2:16379\nconnect = 192.0.2.10:16379\n",
    )
    .expect("runs, as with stunnel");
    assert_eq!(c.services[0].mode, Mode::Server);
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].message.contains("add `client = yes`"),
        "{:?}",
        c.warnings
    );
    assert!(c.warnings[0].at.ends_with("t.conf:3"), "{:?}", c.warnings);
}

#[test]
fn comments_case_defaults_and_several_connects() {
    let c = load(
        "; stunnel comment\n# hash comment\nCLIENT = yes\ncert=a.pem\nTIMEOUTconnect = 3\n\
         connect = 10.0.0.1:1\n\n[a]\n  accept = 1234\n[b]\naccept = [::1]:0\n\
         connect = h1:16379\nconnect = 6379\nfailover = rr\nclient = no\n",
    )
    .expect("valid");
    let (a, b) = (&c.services[0], &c.services[1]);
    assert_eq!(a.mode, Mode::Client);
    assert_eq!(a.accept, "0.0.0.0:1234".parse().expect("addr"));
    assert_eq!(a.connect.len(), 1, "global connect is the default");
    assert_eq!(a.timeouts.connect, Duration::from_secs(3));
    assert!(
        a.tls.cert.as_deref().expect("cert").is_absolute(),
        "relative to the file"
    );
    assert_eq!(b.mode, Mode::Server);
    assert_eq!(b.accept, "[::1]:0".parse().expect("addr"));
    assert_eq!(
        b.connect,
        vec![
            Target {
                host: "h1".into(),
                port: 16379
            },
            Target {
                host: "localhost".into(),
                port: 6379
            }
        ],
        "a section's connect lines replace the default"
    );
    assert_eq!(b.failover, Failover::RoundRobin);
    assert_eq!(a.max_connections, DEFAULT_MAX_CONNECTIONS);
}

#[test]
fn include_directory_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inc = dir.path().join("conf.d");
    std::fs::create_dir(&inc).expect("mkdir");
    std::fs::write(inc.join("20-b.conf"), "[b]\naccept = 2\nconnect = 3\n").expect("w");
    std::fs::write(inc.join("10-a.conf"), "[a]\naccept = 1\nconnect = 3\n").expect("w");
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "cert = x.pem\ninclude = conf.d\n").expect("w");
    let c = Config::load(&main).expect("valid");
    let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    std::fs::write(inc.join("30-bad.conf"), "[c]\nbogus = 1\n").expect("w");
    let e = Config::load(&main).expect_err("bad include").to_string();
    assert!(e.contains("30-bad.conf:2: unknown option 'bogus'"), "{e}");
}

/// stunnel's `ciphers` (an OpenSSL cipher string, TLS 1.2) and `ciphersuites` (TLS 1.3
/// names), as a service default or its own.
#[test]
fn ciphers_and_ciphersuites_narrow_the_suites() {
    use rustls::CipherSuite;
    let c = load(
        "cert = c.pem\nciphers = ECDHE+AESGCM:!AES128\n[a]\naccept = 1\nconnect = 2\n\
         [b]\naccept = 3\nconnect = 2\nciphers = ECDHE-RSA-CHACHA20-POLY1305\n\
         ciphersuites = TLS_AES_128_CCM_SHA256:TLS_CHACHA20_POLY1305_SHA256\n",
    )
    .expect("valid");
    let (a, b) = (&c.services[0].tls, &c.services[1].tls);
    assert_eq!(
        a.ciphers.as_deref(),
        Some(
            &[
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
            ][..]
        )
    );
    assert_eq!(a.ciphersuites, None);
    assert_eq!(
        b.ciphers.as_deref(),
        Some(&[CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256][..])
    );
    assert_eq!(
        b.ciphersuites.as_deref(),
        Some(&[CipherSuite::TLS13_CHACHA20_POLY1305_SHA256][..])
    );
}

#[test]
fn include_loop_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "include = main.conf\n").expect("w");
    let e = Config::load(&main).expect_err("loop").to_string();
    assert!(e.contains("nested deeper"), "{e}");
}

#[test]
fn errors_name_line_and_option() {
    let base = "cert = c.pem\n[r]\naccept = 1\nconnect = 2\n";
    let cases: &[(&str, &str)] = &[
        ("frobnicate = 1\n", "t.conf:5: unknown option 'frobnicate'"),
        (
            "client = maybe\n",
            "t.conf:5: option 'client': bad value `maybe`",
        ),
        ("client = yes ; inline\n", "t.conf:5: option 'client'"),
        ("TIMEOUTidle = soon\n", "expected a number of seconds"),
        (
            "connect = host:notaport\n",
            "t.conf:5: option 'connect': bad value",
        ),
        (
            "sslVersion = TLSv1\n",
            "rustls speaks only TLSv1.2 and TLSv1.3",
        ),
        (
            "curves = prime256v1\n",
            "cannot honour OpenSSL option and curve",
        ),
        (
            "options = NO_SSLv3\n",
            "cannot honour OpenSSL option and curve",
        ),
        (
            "ciphers = DHE-RSA-AES128-GCM-SHA256:RC4\n",
            "t.conf:5: option 'ciphers': bad value `DHE-RSA-AES128-GCM-SHA256:RC4`: it selects none",
        ),
        (
            "ciphers = HIGH:@STRENGTH:@FOO\n",
            "\"@FOO\" is not supported",
        ),
        (
            "ciphersuites = TLS_AES_128_CCM_SHA256\n",
            "names none of the TLS 1.3 suites rustls has",
        ),
        (
            "PSKsecrets = psk.txt\n",
            "does not support TLS pre-shared keys",
        ),
        ("CApath = /etc/ssl\n", "option 'CApath': not supported"),
        ("pid = /run/x.pid\n", "option 'pid' is global"),
        ("maxConnections = 0\n", "must be at least 1"),
        (
            "this line has no equals\n",
            "t.conf:5: expected `option = value`",
        ),
        ("[broken\n", "t.conf:5: section header needs a closing"),
        (
            "[r]\naccept = 3\nconnect = 4\n",
            "t.conf:5: service [r] is already defined at",
        ),
        (
            "[s]\naccept = 1\nconnect = 4\n",
            "accepts on 0.0.0.0:1, as [r] already does",
        ),
        ("[s]\naccept = 9\n", "t.conf:5: [s] needs `connect"),
    ];
    for (extra, want) in cases {
        let got = err(&format!("{base}{extra}"));
        assert!(
            got.contains(want),
            "for {extra:?}: got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn structural_errors() {
    assert!(err("cert = c.pem\n").contains("no [service] section"));
    assert!(err("cert = c.pem\naccept = 5\n").contains("t.conf:2: option 'accept' belongs in"));
    assert!(err("[r]\naccept = 1\nconnect = 2\n").contains("needs `cert`"));
    assert!(
        err("cert = c\n[r]\naccept = 1\nconnect = 2\nsslVersionMin = TLSv1.3\nsslVersionMax = TLSv1.2\n")
            .contains("sslVersionMin is above")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Config::load(&dir.path().join("absent.conf")).expect_err("absent");
    assert!(
        e.to_string()
            .contains("absent.conf: cannot read configuration"),
        "{e}"
    );
}

#[test]
fn globals_and_extensions() {
    let c = load(
        "pid =\ndebug = daemon.7\noutput = log.txt\nforeground = quiet\nmetrics = 127.0.0.1:0\n\
         TIMEOUTdrain = 5\nsyslog = no\ncert = c.pem\n[r]\naccept = 1\nconnect = 2\n\
         maxConnections = 7\nTIMEOUTbusy = 2\n",
    )
    .expect("valid");
    assert_eq!(c.globals.pid, None, "empty pid disables the pid file");
    assert_eq!(c.globals.debug, tracing::Level::DEBUG);
    assert!(
        c.globals
            .output
            .as_deref()
            .expect("output")
            .ends_with("log.txt")
    );
    assert_eq!(
        c.globals.metrics,
        Some("127.0.0.1:0".parse().expect("addr"))
    );
    assert_eq!(c.globals.drain, Duration::from_secs(5));
    assert_eq!(c.services[0].max_connections, 7);
    assert_eq!(c.services[0].timeouts.handshake, Duration::from_secs(2));
    let c = load("metrics = 0.0.0.0:9\ncert = c\n[r]\naccept = 1\nconnect = 2\n").expect("ok");
    assert!(c.warnings[0].message.contains("not a loopback address"));
}

#[test]
fn ca_file_alone_is_flagged() {
    let c = load("cert = c\nCAfile = ca.pem\n[r]\naccept = 1\nconnect = 2\n").expect("ok");
    assert!(
        c.warnings[0]
            .message
            .contains("the CA file alone verifies nothing")
    );
    assert!(c.warnings[0].at.ends_with("t.conf:2"), "{:?}", c.warnings);
}
