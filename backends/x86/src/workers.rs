//! The worker threads a prepared model splits its forwards over.
//!
//! A rayon pool per prepared model, kept across forwards: spawning OS threads per forward
//! (`std::thread::scope`) cost tens of microseconds — more than a whole 8-sample 1024²
//! linear layer — and, on the AMX tier, every new thread's first tile instruction traps
//! so that the kernel can allocate its 8 KB tile state. Pool threads pay both once.

use std::sync::Arc;

/// `threads` workers, or none for single-threaded forwards.
#[derive(Clone, Debug, Default)]
pub(crate) struct Workers(Option<Arc<rayon::ThreadPool>>);

impl Workers {
    /// A pool of `threads` workers (none for `threads ≤ 1`).
    pub(crate) fn new(threads: usize) -> Result<Workers, String> {
        if threads <= 1 {
            return Ok(Workers(None));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lastmile-x86-{i}"))
            .build()
            .map(|p| Workers(Some(Arc::new(p))))
            .map_err(|e| format!("cannot start {threads} worker threads: {e}"))
    }

    /// Runs `f`, whose `spawn`ed tasks run on the workers (on rayon's global pool for a
    /// single-threaded `Workers`, which callers only use with one task); returns when
    /// every task has finished.
    pub(crate) fn scope<'s, F>(&self, f: F)
    where
        F: FnOnce(&rayon::Scope<'s>) + Send,
    {
        match &self.0 {
            Some(pool) => pool.scope(f),
            None => rayon::in_place_scope(f),
        }
    }
}
