//! Concurrent edits on two nodes: detected from version vectors; each csync2 `auto` mode
//! picks csync2's winner; `force` and `resolve` settle what `auto none` leaves; the losing
//! version is always kept in a backup directory.

mod support;

use std::time::{Duration, SystemTime};

use gluu_testkit::find_content;
use gluu_testkit::wait_for;
use support::Cluster;

const SOON: Duration = Duration::from_secs(10);

fn set_mtime(path: &std::path::Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// Both nodes hold `f.xml` = "base"; then n2's daemon stops, n1 writes `mine` (mtime
/// `mine_mtime`) and n2's disk gets `theirs` (mtime `theirs_mtime`) while they cannot talk.
fn concurrent_edit(
    mode: &str,
    mine: &[u8],
    mine_mtime: u64,
    theirs: &[u8],
    theirs_mtime: u64,
) -> Cluster {
    let mut c = Cluster::new(2, &format!("auto {mode};"));
    c.start_all();
    std::fs::write(c.path(0, "f.xml"), b"base").unwrap();
    c.wait_content(1, "f.xml", b"base", SOON);
    c.stop(1);
    std::fs::write(c.path(0, "f.xml"), mine).unwrap();
    set_mtime(&c.path(0, "f.xml"), mine_mtime);
    wait_for(SOON, "n1 to index its change", || {
        let out = c.cli(0, &["status"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("1 changes pending")
            .then_some(())
    });
    std::fs::write(c.path(1, "f.xml"), theirs).unwrap();
    set_mtime(&c.path(1, "f.xml"), theirs_mtime);
    c
}

fn backups_hold(c: &Cluster, content: &[u8]) -> bool {
    c.nodes
        .iter()
        .any(|n| !find_content(&n.backup, content).is_empty())
}

/// (mode, n1 content, n1 mtime, n2 content, n2 mtime, n1 wins?)
type Case = (&'static str, &'static [u8], u64, &'static [u8], u64, bool);

#[test]
fn each_auto_mode_picks_csync2s_winner_and_keeps_the_loser() {
    let cases: [Case; 7] = [
        (
            "younger",
            b"n1 newer",
            2_000_000_000,
            b"n2 older",
            1_000_000_000,
            true,
        ),
        (
            "older",
            b"n1 newer",
            2_000_000_000,
            b"n2 older",
            1_000_000_000,
            false,
        ),
        (
            "bigger",
            b"n1 is the bigger one",
            1_500_000_000,
            b"n2 small",
            1_500_000_000,
            true,
        ),
        (
            "smaller",
            b"n1 is the bigger one",
            1_500_000_000,
            b"n2 small",
            1_500_000_000,
            false,
        ),
        (
            "left",
            b"n1 left",
            1_500_000_000,
            b"n2 right",
            1_600_000_000,
            true,
        ),
        (
            "right",
            b"n1 left",
            1_600_000_000,
            b"n2 right",
            1_500_000_000,
            false,
        ),
        // n2 runs the sync: it is first.
        (
            "first",
            b"n1 waits",
            1_600_000_000,
            b"n2 runs first",
            1_500_000_000,
            false,
        ),
    ];
    for (mode, mine, mine_mtime, theirs, theirs_mtime, n1_wins) in cases {
        let c = concurrent_edit(mode, mine, mine_mtime, theirs, theirs_mtime);
        let out = c.cli(1, &["sync"]);
        assert!(
            out.status.success(),
            "{mode}: sync: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let (winner, loser) = if n1_wins {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        c.wait_content(0, "f.xml", winner, SOON);
        c.wait_content(1, "f.xml", winner, SOON);
        assert!(
            backups_hold(&c, loser),
            "{mode}: the losing version is in no backup directory"
        );
    }
}

#[test]
fn auto_none_reports_and_resolve_settles() {
    let c = concurrent_edit("none", b"n1 edit", 1_500_000_000, b"n2 edit", 1_600_000_000);
    let out = c.cli(1, &["sync"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a conflict: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nothing was overwritten.
    assert_eq!(std::fs::read(c.path(0, "f.xml")).unwrap(), b"n1 edit");
    assert_eq!(std::fs::read(c.path(1, "f.xml")).unwrap(), b"n2 edit");
    let out = c.cli(1, &["conflicts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(text.contains("f.xml") && text.contains("n1"), "{text}");
    let out = c.cli(1, &["status"]);
    assert_eq!(out.status.code(), Some(2));

    let f = c.path(1, "f.xml");
    let out = c.cli(1, &["resolve", "--keep", "remote", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = c.cli(1, &["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    c.wait_content(1, "f.xml", b"n1 edit", SOON);
    assert!(backups_hold(&c, b"n2 edit"));
    let out = c.cli(1, &["conflicts"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // n1 learns that n2 took its version: in sync both ways.
    let out = c.cli(1, &["test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn force_through_the_running_daemon_wins_everywhere() {
    let c = concurrent_edit(
        "none",
        b"n1 forced",
        1_500_000_000,
        b"n2 edit",
        1_600_000_000,
    );
    // n1's daemon is running: force goes through its control socket.
    let root = c.nodes[0].conf.clone();
    let out = c.cli(0, &["force", "-r", root.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("forced"), "{text}");
    let out = c.cli(1, &["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    c.wait_content(1, "f.xml", b"n1 forced", SOON);
    c.wait_content(0, "f.xml", b"n1 forced", SOON);
    assert!(backups_hold(&c, b"n2 edit"));
}

#[test]
fn force_works_on_a_fresh_state() {
    // csync2 -fr / on a fresh database does nothing; ours indexes and forces.
    let c = Cluster::new(2, "");
    std::fs::write(c.path(0, "f.xml"), b"n1").unwrap();
    std::fs::write(c.path(1, "f.xml"), b"n2").unwrap();
    let root = c.nodes[0].conf.clone();
    let out = c.cli(0, &["force", "-r", root.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("2 paths forced"),
        "{text}"
    );
}

#[test]
fn an_edit_the_watcher_has_not_reported_yet_is_never_overwritten() {
    // n1 looks at its own changes only 3 s after the last one, so n2's version of the same
    // file arrives first: n1 must weigh it against what is on its disk, not its index.
    let mut c = Cluster::new(2, "");
    c.start_with(0, &[], &["--debounce-ms", "3000", "--max-delay-ms", "3000"]);
    c.start(1);
    std::fs::write(c.path(1, "f.xml"), b"base").unwrap();
    c.wait_content(0, "f.xml", b"base", SOON);
    std::fs::write(c.path(0, "f.xml"), b"edited on n1").unwrap();
    std::fs::write(c.path(1, "f.xml"), b"edited on n2").unwrap();
    for i in 0..2 {
        wait_for(SOON, "the conflict on both nodes (auto none)", || {
            let out = c.cli(i, &["conflicts"]);
            (out.status.code() == Some(2) && String::from_utf8_lossy(&out.stdout).contains("f.xml"))
                .then_some(())
        });
    }
    assert_eq!(std::fs::read(c.path(0, "f.xml")).unwrap(), b"edited on n1");
    assert_eq!(std::fs::read(c.path(1, "f.xml")).unwrap(), b"edited on n2");
    let line = c.log_line(0, "changed here before the watcher reported it", SOON);
    assert!(line.contains("f.xml"), "{line}");
}
