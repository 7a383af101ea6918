//! The threads that serve client connections: one single-threaded tokio runtime each, as
//! nginx runs one single-threaded worker process per core.
//!
//! A client connection lives on the worker that accepted it, and so do the upstream
//! connections its requests use: each worker keeps its own pools ([`current`] picks them),
//! as each nginx worker does. A request therefore never crosses threads: no cross-thread
//! wake-ups and no allocator traffic between threads, which a work-stealing runtime paid
//! for on every request (perf: a fifth of the CPU per request on this path). The control
//! plane (signals, reload, health checks, metrics, the watchdog) stays on the caller's
//! runtime.

use std::cell::Cell;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is, `1..=n`; 0 on any other thread (the control runtime).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The number of workers for `worker_processes` (`None`: `auto`, one per core).
pub fn count(configured: Option<usize>) -> usize {
    configured.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Running worker threads; dropping this stops them (tasks still on them are dropped).
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            stop: CancellationToken::new(),
        };
        for i in 1..=n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(rt.handle().clone());
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name("gluu-lb-worker".to_owned())
                .spawn(move || {
                    INDEX.with(|c| c.set(i));
                    rt.block_on(stop.cancelled());
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// True when every worker runs a task within `limit`: none is stuck in a blocking call
    /// or a busy loop (the systemd watchdog is fed only then).
    pub async fn responsive(handles: &[Handle], limit: Duration) -> bool {
        let probes: Vec<_> = handles.iter().map(|h| h.spawn(async {})).collect();
        tokio::time::timeout(limit, async {
            for p in probes {
                if p.await.is_err() {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    /// Stops the workers and waits for their threads to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = joined.await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_their_own_numbered_worker_and_stop_ends_the_threads() {
        let workers = Workers::start(2).expect("start");
        assert_eq!(current(), 0, "the test's own thread is no worker");
        let mut seen = Vec::new();
        for h in workers.handles() {
            seen.push(h.spawn(async { current() }).await.expect("task"));
        }
        assert_eq!(seen, [1, 2]);
        assert!(Workers::responsive(workers.handles(), Duration::from_secs(5)).await);
        let stuck = workers.handles()[1].spawn(async {
            std::thread::sleep(Duration::from_millis(600));
        });
        assert!(
            !Workers::responsive(workers.handles(), Duration::from_millis(200)).await,
            "a worker blocked in a system call is not responsive"
        );
        stuck.await.expect("the blocked task ends");
        let handles = workers.handles().to_vec();
        workers.stop().await;
        assert!(
            handles[0].spawn(async {}).await.is_err(),
            "a stopped worker runs nothing"
        );
    }
}
