//! Build information for `--version`: the compiler, the target, the profile, and in release
//! builds the git commit and its date. Debug builds leave the commit out so that a commit
//! does not rebuild every crate of the workspace during development.

use std::process::Command;

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let compiler = run(&rustc, &["--version"])
        .and_then(|v| {
            v.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .into()
        })
        .unwrap_or_else(|| "rustc unknown".into());
    let source = if profile == "release" {
        for what in ["HEAD", "index"] {
            if let Some(path) = run("git", &["rev-parse", "--git-path", what]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        match run("git", &["log", "-1", "--format=%h %cs", "--abbrev=12"]) {
            Some(commit) => format!("commit {commit}"),
            None => "not from a git checkout".into(),
        }
    } else {
        format!("{profile} build")
    };
    println!("cargo:rustc-env=GLUU_BUILD={source}, {target}, {compiler}");
}
