//! The threads that serve client connections: one single-threaded tokio runtime each, as
//! nginx runs one single-threaded worker process per core.
//!
//! The control runtime accepts and hands each client connection to the worker with the
//! fewest ([`Dispatch`]); the connection lives there, and so do the upstream connections
//! its requests use: each worker keeps its own pools ([`current`] picks them), as each
//! nginx worker does. A request therefore never crosses threads: no cross-thread
//! wake-ups and no allocator traffic between threads, which a work-stealing runtime paid
//! for on every request (perf: a fifth of the CPU per request on this path). The control
//! plane (signals, reload, health checks, metrics, the watchdog) stays on the caller's
//! runtime.

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

/// Where new connections go: the workers' runtimes and how many connections each serves.
#[derive(Clone, Debug)]
pub struct Dispatch {
    handles: Arc<[Handle]>,
    load: Arc<[AtomicUsize]>,
    /// Where the search for the least loaded starts, so that ties take turns.
    next: Arc<AtomicUsize>,
}

/// One connection counted on its worker until dropped.
struct Load(Arc<[AtomicUsize]>, usize);

impl Drop for Load {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dispatch {
    pub fn workers(&self) -> usize {
        self.handles.len()
    }

    /// Runs the task `make` makes (one connection) on the worker serving the fewest,
    /// tracked by `tracker`.
    pub fn spawn<M, F>(&self, tracker: &TaskTracker, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let n = self.handles.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let i = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[i].fetch_add(1, Ordering::Relaxed);
        let load = Load(self.load.clone(), i);
        tracker.spawn_on(
            async move {
                let _load = load;
                // A connection's future is ~10 KB. Made here, it comes from the worker's
                // malloc arena, where the connection's buffers live and are reused; made by
                // the accepting thread, 5,000 idle connections took 30 MiB more (measured).
                Box::pin(make()).await;
            },
            &self.handles[i],
        );
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
                next: Arc::new(AtomicUsize::new(0)),
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

    async fn loads_become(dispatch: &Dispatch, want: [usize; 2]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while dispatch.loads() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "loads {:?}, want {want:?}",
                dispatch.loads()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_worker_and_stay_there() {
        let workers = Workers::start(2).expect("start");
        let dispatch = workers.dispatch();
        let tracker = TaskTracker::new();
        assert_eq!(current(), 0, "the test's own thread is no worker");
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let open = |closers: &mut Vec<tokio::sync::oneshot::Sender<()>>| {
            let (close, closed) = tokio::sync::oneshot::channel::<()>();
            let n = closers.len();
            closers.push(close);
            let seen_tx = seen_tx.clone();
            dispatch.spawn(&tracker, move || async move {
                let _ = seen_tx.send((n, current()));
                let _ = closed.await;
                assert_ne!(current(), 0, "still on its worker");
            });
        };
        let mut closers = Vec::new();
        for _ in 0..4 {
            open(&mut closers);
        }
        let mut on = [0; 4];
        for _ in 0..4 {
            let (n, worker) = seen.recv().await.expect("ran");
            on[n] = worker;
        }
        assert_eq!(on, [1, 2, 1, 2], "equal loads take turns");
        assert_eq!(dispatch.loads(), [2, 2]);
        // Worker 1's two connections close: the next two both go there.
        let mut closers = closers.into_iter();
        let (a, b, c, d) = (
            closers.next().expect("a"),
            closers.next().expect("b"),
            closers.next().expect("c"),
            closers.next().expect("d"),
        );
        let _ = (a.send(()), c.send(()));
        loads_become(&dispatch, [0, 2]).await;
        let mut more = Vec::new();
        open(&mut more);
        open(&mut more);
        for _ in 0..2 {
            assert_eq!(seen.recv().await.map(|(_, worker)| worker), Some(1));
        }
        assert_eq!(dispatch.loads(), [2, 2]);
        for close in more.into_iter().chain([b, d]) {
            let _ = close.send(());
        }
        tracker.close();
        tracker.wait().await;
        assert_eq!(dispatch.loads(), [0, 0]);
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
