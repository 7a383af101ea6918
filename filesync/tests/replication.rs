//! Two and three gluu-fsync daemons on loopback replicating one tree: every kind of change
//! arrives, within a second for a plain write; large files move only changed chunks; a peer
//! that was down catches up.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant, SystemTime};

use gluu_testkit::wait_for;
use support::Cluster;

const SOON: Duration = Duration::from_secs(10);

#[test]
fn a_write_arrives_within_a_second_and_every_kind_of_change_follows() {
    let mut c = Cluster::new(2, "");
    c.start_all();

    let start = Instant::now();
    std::fs::write(c.path(0, "oxauth.json"), b"{\"v\":1}").unwrap();
    c.wait_content(1, "oxauth.json", b"{\"v\":1}", Duration::from_secs(1));
    eprintln!("propagated in {:?}", start.elapsed());

    // Modify, and mode + mtime travel.
    let f = c.path(0, "oxauth.json");
    std::fs::write(&f, b"{\"v\":2}").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let g = c.path(1, "oxauth.json");
    wait_for(SOON, "mode and mtime on n2", || {
        let md = std::fs::metadata(&g).ok()?;
        (std::fs::read(&g).ok()? == b"{\"v\":2}"
            && md.permissions().mode() & 0o7777 == 0o640
            && md.mtime() == 1_700_000_000)
            .then_some(())
    });

    // Owner travels (by name: nobody/nogroup exist on Debian).
    nix::unistd::chown(&f, Some(65534.into()), Some(65534.into())).unwrap();
    wait_for(SOON, "owner on n2", || {
        let md = std::fs::metadata(&g).ok()?;
        (md.uid() == 65534 && md.gid() == 65534).then_some(())
    });

    // Nested directories, symlinks (never followed), renames, deletions.
    std::fs::create_dir_all(c.path(0, "idp/metadata")).unwrap();
    std::fs::write(c.path(0, "idp/metadata/sp.xml"), b"<EntityDescriptor/>").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", c.path(0, "idp/link")).unwrap();
    c.wait_content(1, "idp/metadata/sp.xml", b"<EntityDescriptor/>", SOON);
    wait_for(SOON, "symlink on n2", || {
        let target = std::fs::read_link(c.path(1, "idp/link")).ok()?;
        (target == std::path::Path::new("/etc/passwd")).then_some(())
    });
    std::fs::rename(
        c.path(0, "idp/metadata/sp.xml"),
        c.path(0, "idp/sp-renamed.xml"),
    )
    .unwrap();
    c.wait_content(1, "idp/sp-renamed.xml", b"<EntityDescriptor/>", SOON);
    c.wait_gone(1, "idp/metadata/sp.xml", SOON);
    std::fs::remove_dir(c.path(0, "idp/metadata")).unwrap();
    c.wait_gone(1, "idp/metadata", SOON);

    // Excluded names stay local (the guide's `exclude *~ .*;`).
    std::fs::write(c.path(0, "oxauth.json~"), b"editor backup").unwrap();
    std::fs::write(c.path(0, ".swap"), b"hidden").unwrap();
    // A file written after them arrives, and n1 then has nothing left to offer n2: had the
    // excluded files been indexed (in the same scan or an earlier one), n2 would hold them.
    std::fs::write(c.path(0, "zz-after-excluded"), b"marker").unwrap();
    c.wait_content(1, "zz-after-excluded", b"marker", SOON);
    wait_for(SOON, "n1's status to say in sync", || {
        c.cli(0, &["status"]).status.success().then_some(())
    });
    assert!(!c.path(1, "oxauth.json~").exists());
    assert!(!c.path(1, ".swap").exists());

    // A change made on n2 goes the other way.
    std::fs::write(c.path(1, "from-n2"), b"back").unwrap();
    c.wait_content(0, "from-n2", b"back", SOON);

    // n1 offers what it took back to n2 (which acknowledges it without anything moving);
    // until then its status shows it pending, so this is waited for, not assumed.
    let text = wait_for(SOON, "n1's status to say in sync after n2's change", || {
        let out = c.cli(0, &["status"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(
        text.contains("peer n2") && text.contains("reachable"),
        "{text}"
    );
    // n2 took everything from n1: offered back at once, nothing stays pending for n1.
    wait_for(SOON, "n2's status to say in sync", || {
        c.cli(1, &["status"]).status.success().then_some(())
    });
    let out = c.cli(1, &["test"]);
    assert!(
        out.status.success(),
        "test: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn three_nodes_and_a_node_that_was_down_catches_up() {
    let mut c = Cluster::new(3, "");
    c.start_all();
    std::fs::write(c.path(1, "a.xml"), b"from n2").unwrap();
    c.wait_content(0, "a.xml", b"from n2", SOON);
    c.wait_content(2, "a.xml", b"from n2", SOON);

    c.kill(2);
    std::fs::write(c.path(0, "a.xml"), b"changed while n3 was down").unwrap();
    std::fs::write(c.path(0, "b.xml"), b"new while n3 was down").unwrap();
    c.wait_content(1, "b.xml", b"new while n3 was down", SOON);
    let out = c.cli(0, &["status"]);
    assert_eq!(out.status.code(), Some(2), "n3 down: not in sync");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("peer n3") && text.contains("UNREACHABLE"),
        "{text}"
    );

    c.start(2);
    c.wait_content(2, "a.xml", b"changed while n3 was down", SOON);
    c.wait_content(2, "b.xml", b"new while n3 was down", SOON);
    std::fs::remove_file(c.path(2, "a.xml")).unwrap();
    c.wait_gone(0, "a.xml", SOON);
    c.wait_gone(1, "a.xml", SOON);
}

#[test]
fn a_small_edit_to_a_large_file_moves_only_its_chunk() {
    let mut c = Cluster::new(2, "");
    c.start_all();
    let size = 20 << 20;
    let mut content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(c.path(0, "big.bin"), &content).unwrap();
    c.wait_content(1, "big.bin", &content, Duration::from_secs(30));
    let before = received_bytes(&c, 1);
    assert!(
        before >= size as u64,
        "first copy moved everything: {before}"
    );

    // Edit one byte in place, in the middle.
    content[size / 2] ^= 0xff;
    std::fs::write(c.path(0, "big.bin"), &content).unwrap();
    c.wait_content(1, "big.bin", &content, Duration::from_secs(30));
    let moved = received_bytes(&c, 1) - before;
    assert!(moved <= 2 << 20, "an edit of one byte moved {moved} bytes");
    eprintln!("one-byte edit of a 20 MiB file moved {moved} bytes");
}

/// A node that comes up pulls what it missed while its peer, retrying the push that failed
/// while the node was down, offers the same file over a second connection (here forced by a
/// change on the peer mid-transfer): two exchanges with one file to fetch, on a loopback
/// slow enough that the 6 MiB file takes about 3 s. Returns once one of them left the file
/// to the other and stored what it did (the line comes then).
fn two_exchanges_offering_one_file() -> (Cluster, Vec<u8>) {
    let mut c = Cluster::new(2, "");
    c.slow_network("16mbit");
    let big: Vec<u8> = (0..6 << 20).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(c.path(0, "big.bin"), &big).unwrap();
    c.start(0);
    c.start(1);
    wait_for(SOON, "the transfer to n2 to begin (a temp file)", || {
        c.receiving(1).then_some(())
    });
    // n1's watcher kicks its link, which pushes to n2 at once: it offers big.bin as well.
    std::fs::write(c.path(0, "small.txt"), b"small").unwrap();
    c.log_line(1, "already being fetched by another exchange", SOON);
    (c, big)
}

#[test]
fn a_file_two_exchanges_offer_at_once_crosses_the_wire_once() {
    let (c, big) = two_exchanges_offering_one_file();
    c.wait_content(1, "small.txt", b"small", SOON);
    c.wait_content(1, "big.bin", &big, Duration::from_secs(30));
    // Every fetch of it over (a second one would still hold its temp file).
    wait_for(SOON, "n2's fetches to end", || {
        (!c.receiving(1)).then_some(())
    });
    let moved = received_bytes(&c, 1);
    assert!(
        moved < big.len() as u64 * 3 / 2,
        "{moved} bytes crossed for a file of {}",
        big.len()
    );
    // Nothing stays pending: after the fetching exchange, the next one acknowledges all.
    wait_for(SOON, "n1 to see n2 up to date", || {
        let out = c.cli(0, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(" 0 changes pending").then_some(())
    });
}

#[test]
/// The exchange the file was left to fails (its connection cut mid-transfer): the one that
/// left it acknowledged nothing, so the next exchange offers the file again and it arrives.
fn a_file_left_to_an_exchange_that_fails_still_arrives() {
    let (c, big) = two_exchanges_offering_one_file();
    // The exchange that fetches is still under way (its temp file is there).
    assert!(c.receiving(1), "no transfer under way to cut");
    c.cut_connections();
    assert!(
        std::fs::read(c.path(1, "big.bin")).ok() != Some(big.clone()),
        "big.bin arrived before the cut: nothing was tested"
    );
    c.wait_content(1, "big.bin", &big, Duration::from_secs(30));
}

fn received_bytes(c: &Cluster, i: usize) -> u64 {
    let out = c.cli(i, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "bytes")
        .unwrap_or_else(|| panic!("no byte count in {text}"));
    words[at - 1].parse().unwrap()
}

#[test]
/// After a `sync` pass, with no daemon on this node: `status` knows when the peer was last
/// reached, and nothing is left "pending" for the peer that sent what the pass took (the
/// peer's root directory entry, changed by the file it received).
fn status_after_a_pass_without_a_daemon_knows_the_exchange_and_has_nothing_pending() {
    let mut c = Cluster::new(2, "");
    c.start(1);
    std::fs::write(c.path(0, "idp.properties"), b"synced by a pass").unwrap();
    let out = c.cli(0, &["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_content(1, "idp.properties", b"synced by a pass", SOON);
    c.stop(1);
    // Neither daemon runs now: n1's status comes from its state directory alone.
    let out = c.cli(0, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("peer n2"))
        .unwrap_or_else(|| panic!("no line for n2: {text}"));
    assert!(
        line.contains("UNREACHABLE")
            && line.contains(" s ago")
            && line.contains(" 0 changes pending"),
        "{line}"
    );
    assert!(!line.contains("never"), "{line}");
}
