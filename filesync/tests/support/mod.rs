//! A cluster of gluu-fsync daemons on loopback: one temp dir, each node with its own root
//! (csync2 `prefix`), state directory and ephemeral port, all from one csync2.cfg.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use gluu_testkit::{Proc, free_port, wait_for};

pub const BIN: &str = env!("CARGO_BIN_EXE_gluu-fsync");

#[derive(Debug)]
pub struct FsNode {
    pub name: String,
    /// The replicated tree on this node (`%root%/conf`).
    pub conf: PathBuf,
    pub backup: PathBuf,
    pub state: PathBuf,
    pub port: u16,
    pub proc: Option<Proc>,
}

#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub nodes: Vec<FsNode>,
    /// Holds the network namespace of [`Cluster::slow_network`] (dropped after the nodes).
    net: Option<Proc>,
}

impl Cluster {
    /// `n` nodes in one group; `group_extra` goes inside the group block (e.g. `auto left;`).
    pub fn new(n: usize, group_extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("csync2.key");
        gluu_fsync::keygen(&key).expect("keygen");
        let mut nodes = Vec::new();
        let mut prefix = String::from("prefix root {\n");
        let mut hosts = String::new();
        for i in 1..=n {
            let name = format!("n{i}");
            let root = dir.path().join(&name);
            let conf = root.join("conf");
            std::fs::create_dir_all(&conf).expect("mkdir");
            let port = free_port();
            prefix.push_str(&format!("  on {name}: {};\n", root.display()));
            hosts.push_str(&format!(" {name}@127.0.0.1:{port}"));
            nodes.push(FsNode {
                backup: root.join("backup"),
                state: root.join("state"),
                name,
                conf,
                port,
                proc: None,
            });
        }
        prefix.push_str("}\n");
        let config = dir.path().join("csync2.cfg");
        std::fs::write(
            &config,
            format!(
                "{prefix}group test {{\n  host{hosts};\n  key {};\n  include %root%/conf;\n  exclude *~ .*;\n  backup-directory %root%/backup;\n  backup-generations 3;\n  {group_extra}\n}}\n",
                key.display()
            ),
        )
        .expect("write config");
        Cluster {
            dir,
            config,
            nodes,
            net: None,
        }
    }

    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[], &[]);
    }

    /// Start node `i`'s daemon with these extra environment variables and daemon options.
    pub fn start_with(&mut self, i: usize, env: &[(&str, &std::ffi::OsStr)], options: &[&str]) {
        let cmd = match &self.net {
            Some(_) => self.in_net(BIN),
            None => Command::new(BIN),
        };
        self.launch(i, cmd, env, options);
    }

    /// `program`, to be run in the namespace of [`Cluster::slow_network`].
    fn in_net(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let holder = self.net.as_ref().expect("slow_network first");
        let mut cmd = Command::new(gluu_testkit::require("nsenter"));
        cmd.args(["--target", &holder.pid().to_string(), "--net"])
            .arg(program);
        cmd
    }

    /// From now on, start the daemons in one network namespace of this test's own, whose
    /// loopback carries at most `rate` (`tc`'s token bucket: `16mbit` is 2 MB/s), so that a
    /// transfer of a few MiB lasts seconds. Control sockets are files: `cli` still works.
    pub fn slow_network(&mut self, rate: &str) {
        gluu_testkit::require("ip");
        gluu_testkit::require("tc");
        let mut holder = Proc::spawn(
            Command::new(gluu_testkit::require("unshare"))
                .args(["--net", "sh", "-c"])
                .arg(
                    r#"ip link set lo up && tc qdisc add dev lo root tbf rate "$1" burst 256kb latency 50ms && echo slow network ready >&2 && exec sleep 3600"#,
                )
                .arg("sh")
                .arg(rate),
        );
        holder.wait_line("slow network ready", Duration::from_secs(10));
        self.net = Some(holder);
    }

    /// Start node `i`'s daemon with its tree on a tmpfs of `size` (mount's `size=`) that
    /// only the daemon sees: it runs in a mount namespace of its own. Its files are under
    /// [`Cluster::as_seen_by`]; [`Cluster::resize`] grows the tmpfs.
    pub fn start_on_tmpfs(&mut self, i: usize, size: &str) {
        let mut cmd = Command::new(gluu_testkit::require("unshare"));
        cmd.args(["--mount", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$1,mode=0755" gluu-test "$2" && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(size)
            .arg(&self.nodes[i].conf)
            .arg(BIN);
        self.launch(i, cmd, &[], &[]);
    }

    /// Where the test sees node `i`'s `rel` as its daemon does (through `/proc/PID/root`,
    /// which crosses into the daemon's mount namespace).
    pub fn as_seen_by(&self, i: usize, rel: &str) -> PathBuf {
        let pid = self.nodes[i].proc.as_ref().expect("running").pid();
        let path = self.path(i, rel);
        PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").expect("absolute"))
    }

    /// Give node `i`'s tmpfs (see [`Cluster::start_on_tmpfs`]) a new size.
    pub fn resize(&self, i: usize, size: &str) {
        let pid = self.nodes[i].proc.as_ref().expect("running").pid();
        let out = Command::new(gluu_testkit::require("nsenter"))
            .args(["--target", &pid.to_string(), "--mount", "mount", "-o"])
            .arg(format!("remount,size={size}"))
            .arg(&self.nodes[i].conf)
            .output()
            .expect("run nsenter");
        assert!(out.status.success(), "{}", gluu_testkit::text_of(&out));
    }

    /// Reset every TCP connection in the namespace of [`Cluster::slow_network`] (`ss -K`):
    /// each exchange under way fails as if the network had dropped it.
    pub fn cut_connections(&self) {
        let out = self
            .in_net(gluu_testkit::require("ss"))
            .args(["-K", "-t", "state", "established"])
            .output()
            .expect("run nsenter");
        assert!(out.status.success(), "{}", gluu_testkit::text_of(&out));
        // ss lists what it reset under a header line; a kernel without socket destruction
        // (CONFIG_INET_DIAG_DESTROY) resets nothing and says nothing.
        let cut = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(
            cut > 1,
            "ss -K reset no connection: {}",
            gluu_testkit::text_of(&out)
        );
    }

    fn launch(
        &mut self,
        i: usize,
        mut cmd: Command,
        env: &[(&str, &std::ffi::OsStr)],
        options: &[&str],
    ) {
        let node = &mut self.nodes[i];
        let mut proc = Proc::spawn(
            cmd.arg("-c")
                .arg(&self.config)
                .args(["-N", &node.name, "--state-dir"])
                .arg(&node.state)
                .args(["daemon", "--rescan-secs", "30"])
                .args(options)
                .envs(env.iter().copied()),
        );
        proc.wait_line("gluu-fsync ready", Duration::from_secs(30));
        node.proc = Some(proc);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut proc) = self.nodes[i].proc.take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    /// A graceful stop (SIGTERM), waited for.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut proc) = self.nodes[i].proc.take() {
            proc.terminate(Duration::from_secs(20));
        }
    }

    /// Run a gluu-fsync command as node `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Output {
        let node = &self.nodes[i];
        Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .args(["-N", &node.name, "--state-dir"])
            .arg(&node.state)
            .args(args)
            .output()
            .expect("run gluu-fsync")
    }

    /// Whether node `i` is receiving a file into its tree (a temp file is there).
    pub fn receiving(&self, i: usize) -> bool {
        std::fs::read_dir(&self.nodes[i].conf)
            .unwrap()
            .flatten()
            .any(|e| gluu_fsync::fsops::is_temp(e.file_name().to_str().unwrap_or("")))
    }

    pub fn path(&self, i: usize, rel: &str) -> PathBuf {
        self.nodes[i].conf.join(rel)
    }

    /// Wait until `rel` on node `i` holds `content`.
    pub fn wait_content(&self, i: usize, rel: &str, content: &[u8], limit: Duration) {
        let path = self.path(i, rel);
        wait_for(
            limit,
            &format!("{} to hold the new content", path.display()),
            || (std::fs::read(&path).ok()? == content).then_some(()),
        );
    }

    pub fn wait_gone(&self, i: usize, rel: &str, limit: Duration) {
        let path = self.path(i, rel);
        wait_for(limit, &format!("{} to be deleted", path.display()), || {
            std::fs::symlink_metadata(&path).is_err().then_some(())
        });
    }

    /// The stderr lines node `i`'s daemon wrote so far (and up to `limit` more for `needle`).
    pub fn log_line(&mut self, i: usize, needle: &str, limit: Duration) -> String {
        self.nodes[i]
            .proc
            .as_mut()
            .expect("running")
            .wait_line(needle, limit)
    }
}
