//! The threads that serve client connections: one single-threaded tokio runtime each, as
//! nginx runs one single-threaded worker process per core.
//!
//! Each worker accepts on its own socket of every listening address (`SO_REUSEPORT`: the
//! kernel spreads new connections over the sockets) and serves what it accepted; the
//! upstream connections a connection's requests use live on the same worker: each worker
//! keeps its own pools ([`current`] picks them), as each nginx worker does. A request
//! therefore never crosses threads: no cross-thread wake-ups and no allocator traffic
//! between threads, which a work-stealing runtime paid for on every request (perf: a fifth
//! of the CPU per request on this path). The control plane (signals, reload, health
//! checks, metrics, the watchdog) stays on the caller's runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log;

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
    dispatch: Dispatch,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

/// The workers' runtimes and how many connections each serves.
#[derive(Clone, Debug)]
pub struct Dispatch {
    handles: Arc<[Handle]>,
    load: Arc<[AtomicUsize]>,
}

/// One connection counted on its worker until dropped.
#[derive(Debug)]
pub struct Load(Arc<[AtomicUsize]>, usize);

impl Drop for Load {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dispatch {
    pub fn workers(&self) -> usize {
        self.handles.len()
    }

    /// Runs the task `make` makes on worker `i` (`0..workers()`), tracked by `tracker`.
    /// The future is made there, so it comes from that worker's malloc arena (a
    /// connection's buffers, made by another thread, took 30 MiB more for 5,000 idle
    /// connections, measured).
    pub fn spawn_on<M, F>(&self, i: usize, tracker: &TaskTracker, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        tracker.spawn_on(async move { Box::pin(make()).await }, &self.handles[i]);
    }

    /// Counts a connection on the calling worker (on no worker: on none) until dropped.
    pub fn count_here(&self) -> Option<Load> {
        let i = current().checked_sub(1)?;
        self.load.get(i)?.fetch_add(1, Ordering::Relaxed);
        Some(Load(self.load.clone(), i))
    }

    /// The connections each worker serves now.
    pub fn loads(&self) -> Vec<usize> {
        self.load
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }

    /// True when every worker runs a task within `limit`: none is stuck in a blocking call
    /// or a busy loop (the systemd watchdog is fed only then).
    pub async fn responsive(&self, limit: Duration) -> bool {
        let probes: Vec<_> = self.handles.iter().map(|h| h.spawn(async {})).collect();
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
}

impl Workers {
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(n);
        let mut workers = Workers {
            dispatch: Dispatch {
                handles: Arc::new([]),
                load: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            },
            threads: Vec::with_capacity(n),
            stop: CancellationToken::new(),
        };
        for i in 1..=n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(access_log::flush)
                .build()?;
            handles.push(rt.handle().clone());
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name("gluu-lb-worker".to_owned())
                .spawn(move || {
                    INDEX.with(|c| c.set(i));
                    rt.block_on(stop.cancelled());
                    // Tasks dropped with the runtime may still log.
                    drop(rt);
                    access_log::flush();
                })?;
            workers.threads.push(thread);
        }
        workers.dispatch.handles = handles.into();
        Ok(workers)
    }

    pub fn dispatch(&self) -> Dispatch {
        self.dispatch.clone()
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
    async fn a_task_runs_on_its_worker_and_counts_there() {
        let workers = Workers::start(2).expect("start");
        let dispatch = workers.dispatch();
        let tracker = TaskTracker::new();
        assert_eq!(current(), 0, "the test's own thread is no worker");
        assert!(
            dispatch.count_here().is_none(),
            "nothing to count off the workers"
        );
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let mut closers = Vec::new();
        for (i, n) in [(1, 0), (1, 1), (0, 2)] {
            let (close, closed) = tokio::sync::oneshot::channel::<()>();
            closers.push(close);
            let (seen_tx, d) = (seen_tx.clone(), dispatch.clone());
            dispatch.spawn_on(i, &tracker, move || async move {
                let _load = d.count_here();
                let _ = seen_tx.send((n, current()));
                let _ = closed.await;
                assert_eq!(current(), i + 1, "still on its worker");
            });
        }
        let mut on = [0; 3];
        for _ in 0..3 {
            let (n, worker) = seen.recv().await.expect("ran");
            on[n] = worker;
        }
        assert_eq!(on, [2, 2, 1]);
        assert_eq!(dispatch.loads(), [1, 2]);
        drop(closers);
        tracker.close();
        tracker.wait().await;
        assert_eq!(
            dispatch.loads(),
            [0, 0],
            "a finished task is no longer counted"
        );
        workers.stop().await;
    }

    #[tokio::test]
    async fn a_stuck_worker_is_not_responsive_and_a_stopped_one_runs_nothing() {
        let workers = Workers::start(2).expect("start");
        let dispatch = workers.dispatch();
        assert!(dispatch.responsive(Duration::from_secs(5)).await);
        let stuck = dispatch.handles[1].spawn(async {
            std::thread::sleep(Duration::from_millis(600));
        });
        assert!(
            !dispatch.responsive(Duration::from_millis(200)).await,
            "a worker blocked in a system call is not responsive"
        );
        stuck.await.expect("the blocked task ends");
        assert!(dispatch.responsive(Duration::from_secs(5)).await);
        workers.stop().await;
        assert!(
            dispatch.handles[0].spawn(async {}).await.is_err(),
            "a stopped worker runs nothing"
        );
        assert!(!dispatch.responsive(Duration::from_secs(1)).await);
    }
}
