//! Man pages from the clap definitions: `BIN --man-pages DIR` writes `BIN.8`, and
//! `BIN-SUBCOMMAND.8` for each subcommand, into DIR and exits. It is not in `--help`: it is
//! how `scripts/install.sh` makes the pages it installs, so they can never disagree with
//! the binary next to them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The flag, checked before clap parses anything (a daemon's required arguments would
/// otherwise be demanded first).
const FLAG: &str = "--man-pages";

/// Handles `--man-pages DIR` (as the first argument) and exits; returns otherwise.
pub fn handle<C: clap::CommandFactory>() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(FLAG)) {
        return;
    }
    let code = match args.next() {
        None => {
            eprintln!("{FLAG} needs a directory");
            64
        }
        Some(dir) => match write(C::command(), Path::new(&dir)) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                0
            }
            Err(e) => {
                eprintln!("{FLAG} {}: {e}", Path::new(&dir).display());
                1
            }
        },
    };
    std::process::exit(code);
}

/// Writes the pages of `cmd` and its subcommands (section 8: system administration)
/// into `dir`, creating it; returns the files written.
pub fn write(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn each(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            each(sub, dir, out)?;
        }
        out.push(
            clap_mangen::Man::new(cmd)
                .section("8")
                .manual("gluu-ha")
                .source(format!("gluu-ha {}", env!("CARGO_PKG_VERSION")))
                .generate_to(dir)?,
        );
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    each(cmd, dir, &mut out)?;
    out.reverse();
    Ok(out)
}
