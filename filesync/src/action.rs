//! csync2's `action` blocks: after a batch that changed files matching an action's
//! `pattern`, run its `exec` once, with `%%` replaced by the changed paths (each its own
//! argument: no shell, so a file name cannot inject a command). Output goes to `logfile`.
//! A command that fails or outlives [`ACTION_TIMEOUT`] is logged and killed; replication
//! goes on regardless.

use std::process::Stdio;
use std::time::Duration;

use crate::config::{Action, Config};
use crate::tree::Tree;

pub const ACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Run every action of `tree`'s group that matches one of `changed` (logical paths).
/// `local`: the changes were made here (only `do-local` actions run for those).
pub fn run_matching(tree: &Tree, config: &Config, changed: &[String], local: bool) {
    for action in &tree.group.actions {
        if local && !action.do_local {
            continue;
        }
        let paths: Vec<String> = changed
            .iter()
            .filter(|p| action.patterns.any_matches(p))
            .filter_map(|p| config.local_path(p, &tree.me).ok())
            .map(|p| p.display().to_string())
            .collect();
        if paths.is_empty() {
            continue;
        }
        let argv: Vec<String> = action
            .exec
            .iter()
            .flat_map(|word| {
                if word == "%%" {
                    paths.clone()
                } else {
                    vec![word.replace("%%", &paths.join(" "))]
                }
            })
            .collect();
        tokio::spawn(run(action.clone(), argv));
    }
}

async fn run(action: Action, argv: Vec<String>) {
    let output = match &action.logfile {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => file
                .try_clone()
                .map(|f| (Stdio::from(file), Stdio::from(f))),
            Err(e) => Err(e),
        },
        None => Ok((Stdio::null(), Stdio::null())),
    };
    let (stdout, stderr) = match output {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(action = %action.place, error = %e, "cannot open the action's logfile");
            (Stdio::null(), Stdio::null())
        }
    };
    let spawned = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(action = %action.place, command = %argv[0], error = %e, "action did not start");
            return;
        }
    };
    match tokio::time::timeout(ACTION_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(action = %action.place, command = %argv[0], "action ran");
        }
        Ok(Ok(status)) => {
            tracing::warn!(action = %action.place, command = %argv[0], %status, "action failed");
        }
        Ok(Err(e)) => tracing::warn!(action = %action.place, error = %e, "action failed"),
        Err(_) => {
            let _ = child.kill().await;
            tracing::warn!(action = %action.place, command = %argv[0], timeout = ?ACTION_TIMEOUT, "action timed out and was killed");
        }
    }
}
