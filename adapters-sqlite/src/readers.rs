//! The read side: a small pool of read-only connections, used from tokio's blocking threads.
//!
//! In WAL mode a reader sees the last commit as of its first step and never waits for the writer or its
//! syncs. A semaphore bounds how many reads run at once (about one per core); connections are opened on
//! first need and kept for the next read.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rookery_ports::Failure;
use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::error::Context;
use crate::schema;

/// The read-only connections of one database.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// How many idle connections are kept.
    size: usize,
    permits: Arc<Semaphore>,
}

fn poisoned() -> Failure {
    Failure::permanent("sqlite store: the reader pool's lock was poisoned by a panic")
}

impl Readers {
    /// A pool of at most `size` connections to the database at `path`.
    pub(crate) fn new(path: PathBuf, size: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::with_capacity(size)),
            size: size.max(1),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// The pool size for this machine: one connection per core, at least two and at most eight.
    pub(crate) fn default_size() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
    }

    /// Opens one connection now and keeps it, so a database readers cannot open is found at start.
    pub(crate) fn warm(&self) -> rusqlite::Result<()> {
        let conn = schema::open_reader(&self.path)?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        Ok(())
    }

    /// Closes the idle connections (a read still running keeps its own until it ends).
    pub(crate) fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn take(&self) -> Result<Connection, Failure> {
        if let Some(conn) = self.idle.lock().map_err(|_| poisoned())?.pop() {
            return Ok(conn);
        }
        schema::open_reader(&self.path).context("opening a read connection")
    }

    /// Runs `f`, a point read (one indexed row, microseconds), on an idle connection right here on the
    /// calling task's thread, saving the hand-off to a blocking thread and back, which costs more than
    /// such a read. Without an idle connection it goes the way of [`Readers::run`].
    ///
    /// Only for reads bounded by an index lookup: a scan or a page of rows belongs on [`Readers::run`].
    ///
    /// # Errors
    /// What `f` answers, or a [`Failure`] when no connection could be had.
    pub(crate) async fn run_point<T, F>(self: &Arc<Self>, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        if self.permits.is_closed() {
            return Err(Failure::permanent("sqlite store: the reader pool is closed"));
        }
        let idle = self.idle.lock().map_err(|_| poisoned())?.pop();
        let Some(conn) = idle else {
            return self.run(f).await;
        };
        let outcome = f(&conn);
        if outcome.is_ok() {
            self.put_back(conn)?;
        }
        outcome
    }

    /// Keeps `conn` for the next read, unless the pool already holds as many as it may (point reads run
    /// without a permit, so more connections than permits can be open at a moment; the extra ones close).
    fn put_back(&self, conn: Connection) -> Result<(), Failure> {
        let mut idle = self.idle.lock().map_err(|_| poisoned())?;
        if idle.len() < self.size {
            idle.push(conn);
        }
        Ok(())
    }

    /// Runs `f` on a read-only connection, on a blocking thread, once a permit is free.
    ///
    /// # Errors
    /// What `f` answers, or a [`Failure`] when no connection could be had.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Failure::permanent("sqlite store: the reader pool is closed"))?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers.take()?;
            let outcome = f(&conn);
            // A connection that failed is dropped rather than reused: it may be what failed.
            if outcome.is_ok() {
                readers.put_back(conn)?;
            }
            outcome
        })
        .await
        .map_err(|e| Failure::transient(format!("sqlite store: a read task failed: {e}")))?
    }
}
