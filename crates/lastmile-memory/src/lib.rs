//! # lastmile-memory — memory is a first-class output
//!
//! * [`CountingAlloc`]: a global allocator wrapper that counts live bytes, the peak,
//!   and the largest single allocation, so a binary can *measure* what a training
//!   step costs. Install it with
//!   `#[global_allocator] static A: lastmile_memory::CountingAlloc = lastmile_memory::CountingAlloc;`.
//! * [`inference_activation_peak`]: the analytic activation footprint of running a
//!   graph forward with tensors freed after their last use (what an inference engine
//!   needs, and all that forward-gradient training needs).
//!
//! The allocator is the one place with `unsafe` here: `GlobalAlloc` is an unsafe trait.
#![deny(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lastmile_core::QuantModel;
use serde::Serialize;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Counts bytes on top of the system allocator.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

fn record_alloc(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
    COUNT.fetch_add(1, Ordering::Relaxed);
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counters are atomics and never affect the pointers.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` came from us (i.e. `System`), `new_size` is the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            record_alloc(new_size);
        }
        p
    }
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Bytes allocated and not yet freed.
    pub live: usize,
    /// Highest `live` since the last [`reset_peak`].
    pub peak: usize,
    /// Largest single allocation since the last [`reset_peak`].
    pub largest: usize,
    /// Allocations since the last [`reset_peak`].
    pub allocations: usize,
}

/// Current counters (all zero unless [`CountingAlloc`] is the global allocator).
pub fn usage() -> Usage {
    Usage {
        live: LIVE.load(Ordering::Relaxed),
        peak: PEAK.load(Ordering::Relaxed),
        largest: LARGEST.load(Ordering::Relaxed),
        allocations: COUNT.load(Ordering::Relaxed),
    }
}

/// Starts a new measurement window: peak := live, largest := 0, allocations := 0.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    COUNT.store(0, Ordering::Relaxed);
}

/// Runs `f` and returns its result with the usage during it; `peak` and `live` in the
/// result are relative to the live bytes when `f` started.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    reset_peak();
    let base = LIVE.load(Ordering::Relaxed);
    let out = f();
    let u = usage();
    (
        out,
        Usage {
            live: u.live.saturating_sub(base),
            peak: u.peak.saturating_sub(base),
            ..u
        },
    )
}

/// Whether the counting allocator is installed in this binary.
pub fn is_counting() -> bool {
    let before = COUNT.load(Ordering::Relaxed);
    let v = std::hint::black_box(vec![0u8; 64]);
    drop(v);
    COUNT.load(Ordering::Relaxed) != before
}

/// Analytic activation memory of one forward of `model` on `batch` samples: int8
/// tensors, each freed after its last reader (the input included). Returns the peak
/// bytes of live activations.
pub fn inference_activation_peak(model: &QuantModel, batch: usize) -> usize {
    let Ok(shapes) = model.topology.infer_shapes(&model.specs()) else {
        return 0;
    };
    let n = model.topology.nodes.len();
    let size = |v: usize| batch * shapes[v].iter().product::<usize>();
    // last_use[v] = index of the last node reading value v (the output is read "after" all).
    let mut last_use = vec![0usize; n + 1];
    for (i, node) in model.topology.nodes.iter().enumerate() {
        for v in &node.inputs {
            last_use[v.index()] = last_use[v.index()].max(i);
        }
    }
    last_use[n] = n;
    let mut live = size(0);
    let mut peak = live;
    for i in 0..n {
        live += size(i + 1);
        peak = peak.max(live);
        for (v, &last) in last_use.iter().enumerate().take(i + 1) {
            if last == i {
                live -= size(v);
            }
        }
    }
    peak
}

/// Bytes of all parameters as stored (weights 1 or 2 bytes, biases 4).
pub fn parameter_bytes(model: &QuantModel) -> usize {
    model.params.iter().map(|p| p.data.byte_len()).sum()
}

/// Bytes of the trainable parameters.
pub fn trainable_bytes(model: &QuantModel) -> usize {
    model
        .params
        .iter()
        .filter(|p| p.spec.trainable)
        .map(|p| p.data.byte_len())
        .sum()
}
