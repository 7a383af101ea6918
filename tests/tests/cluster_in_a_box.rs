//! `gluu-box`, the README's first command: its walkthrough passes step by step (`--check`),
//! and without `--check` it keeps the cluster up until Ctrl-C, which stops every daemon it
//! started.
//!
//! gluu-box runs the daemons next to it: `cargo test --workspace` (the README's test
//! command) builds them; a missing one fails the walkthrough with the command that builds it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BOX: &str = env!("CARGO_BIN_EXE_gluu-box");
const LIMIT: Duration = Duration::from_secs(180);

/// Every step gluu-box prints, in order, by the start of its title.
const STEPS: [&str; 34] = [
    "gluu-lb -t",
    "gluu-lb listening",
    "OpenID configuration through the balancer",
    "port 80 redirects",
    "/identity sticks to one node per client /24",
    "other paths take turns",
    "a path no location matches",
    "node2 sick",
    "node2 stopped",
    "node2 started again",
    "a 500 from every node",
    "status of every upstream server",
    "when the served certificate ends",
    "gluu-tunnel -t",
    "gluu-tunnel (redis-host) listening",
    "gluu-tunnel -t",
    "gluu-tunnel (node1) listening",
    "gluu-tunnel -t",
    "gluu-tunnel (node2) listening",
    "node1: AUTH + PING",
    "node2: AUTH + PING",
    "a session written through node1's tunnel is read through node2's",
    "a host holding another certificate",
    "... and the Redis-side tunnel refuses it",
    "gluu-fsync keygen",
    "gluu-fsync -t",
    "gluu-fsync daemon (node1)",
    "gluu-fsync daemon (node2)",
    "node1's files reach node2 at start",
    "a file written on node1 appears on node2",
    "node2's daemon stopped",
    "gluu-fsync conflicts (node1) lists it",
    "gluu-fsync force (node1)",
    "gluu-fsync test (node1)",
];

fn assert_walkthrough(out: &str) {
    let steps: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("[ ok ] "))
        .collect();
    assert!(!out.contains("[FAIL]"), "{out}");
    assert_eq!(steps.len(), STEPS.len(), "{out}");
    for (step, want) in steps.iter().zip(STEPS) {
        assert!(
            step.starts_with(want),
            "expected {want:?}, got {step:?}\n{out}"
        );
    }
}

#[test]
fn check_walks_through_every_step_of_the_guide() {
    let out = Command::new(BOX)
        .arg("--check")
        .output()
        .expect("run gluu-box");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_walkthrough(&text);
    assert!(text.contains("all 34 steps passed"), "{text}");
}

#[test]
fn ctrl_c_stops_everything_it_started() {
    let mut child = Command::new(BOX)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run gluu-box");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let read_until = |needle: &str, seen: &mut Vec<String>| loop {
        let line = rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("no {needle:?} in:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if line.contains(needle) {
            return line;
        }
    };
    read_until("Ctrl-C stops everything", &mut seen);
    let out = seen.join("\n");
    assert_walkthrough(&out);
    // The balancer's address, from the summary; it must go away with the rest.
    let lb: SocketAddr = seen
        .iter()
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix("balancer")?;
            let port = rest.split(':').nth(2)?.split('/').next()?.parse().ok()?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .unwrap_or_else(|| panic!("no balancer address in:\n{out}"));
    assert!(gluu_testkit::listening(lb), "{lb} while running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    read_until("nodes: stopped", &mut seen);
    let status = gluu_testkit::wait_for(LIMIT, "gluu-box to exit", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}\n{}", seen.join("\n"));
    let stops: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains(": stopped (exit status: 0)"))
        .collect();
    assert_eq!(
        stops.len(),
        6,
        "gluu-lb, three gluu-tunnels, two gluu-fsyncs:\n{}",
        seen.join("\n")
    );
    assert!(
        !gluu_testkit::listening(lb),
        "{lb} still answers after Ctrl-C"
    );
}
