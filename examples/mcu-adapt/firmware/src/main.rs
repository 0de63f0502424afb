//! QZO-FF adaptation on a Cortex-M4F (`thumbv7em-none-eabihf`; under qemu: `-machine
//! mps2-an386`), reported over semihosting.
//!
//! Flash holds a pretrained 16w8a `digits-cnn` (a lastmile model file) and a labelled set of
//! shifted digits (see `mcu_adapt::set`), both written by `mcu-adapt-host` at build time.
//! [`mcu_adapt::run`] — `lastmile_train::Trainer` on the cpu-ref backend, the same call the
//! host reference makes — adapts the model, then this prints the result line (accuracy before
//! and after, steps, hashes of the starting and trained weights) and the RAM it took,
//! **measured**:
//!
//! * static: `.data` + `.bss`, from the linker symbols;
//! * heap: the allocator arena is painted before use and scanned from the top afterwards (the
//!   highest byte the allocator ever touched); a wrapper around `embedded-alloc` also records
//!   its peak allocated bytes per phase (setup + baseline evaluation, training, wrap-up);
//! * stack: cortex-m-rt paints the stack region at reset (`paint-stack`); the lowest word no
//!   longer holding the paint is the high-water mark.
//!
//! RAM is 256 KiB in `memory.x`: the run has to fit the budget to succeed at all. Exits with
//! semihosting's failure code when the run fails or accuracy does not rise.
#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use embedded_alloc::LlffHeap;
use mcu_adapt::Phase;

/// The pretrained model file (`mcu-adapt-host` wrote it; see `build.rs`).
static MODEL: &[u8] = include_bytes!(env!("MCU_ADAPT_MODEL"));
/// The labelled set (adaptation + test samples, as input codes).
static SET: &[u8] = include_bytes!(env!("MCU_ADAPT_SET"));

/// Bytes of RAM given to the heap, right after `.bss`; the stack has the rest of the 256 KiB.
const HEAP_SIZE: usize = 128 * 1024;
/// The RAM budget the figures are reported against.
const BUDGET: usize = 256 * 1024;
/// cortex-m-rt's stack paint (`STACK_PAINT_VALUE`); the heap arena gets it too.
const PAINT: u32 = cortex_m_rt::STACK_PAINT_VALUE;

/// `embedded-alloc`'s linked-list heap, recording the peak of its allocated bytes
/// (`LlffHeap::used`: requested sizes rounded up to its block granularity).
struct Counting {
    heap: LlffHeap,
    peak_used: AtomicUsize,
}

// SAFETY: every call is forwarded unchanged to `LlffHeap`, a correct `GlobalAlloc`; the
// counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on as is.
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            self.peak_used.fetch_max(self.heap.used(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout (the caller's contract).
        unsafe { self.heap.dealloc(ptr, layout) };
    }
}

impl Counting {
    /// Allocator peak (`LlffHeap::used`, with its rounding) since the last restart.
    fn peak(&self) -> usize {
        self.peak_used.load(Relaxed)
    }

    /// Starts a new window: peaks restart from what is allocated now.
    fn restart_peaks(&self) {
        self.peak_used.store(self.heap.used(), Relaxed);
    }
}

#[global_allocator]
static HEAP: Counting = Counting {
    heap: LlffHeap::empty(),
    peak_used: AtomicUsize::new(0),
};

// Symbols of cortex-m-rt's `link.x`. Only their addresses are used.
unsafe extern "C" {
    static __sdata: u32;
    static __edata: u32;
    static __sbss: u32;
    static __ebss: u32;
    static __stext: u32;
    static __etext: u32;
    static __srodata: u32;
    static __erodata: u32;
    /// First free RAM byte after `.bss`/`.uninit` (= `_stack_end`, the bottom of the painted area).
    static __sheap: u32;
    /// Top of RAM, the initial stack pointer.
    static _stack_start: u32;
}

macro_rules! addr {
    ($sym:ident) => {
        (&raw const $sym) as usize
    };
}

/// The word at `a` (4-aligned, inside RAM).
fn word(a: usize) -> u32 {
    // SAFETY: callers pass 4-aligned addresses inside the RAM region of `memory.x` (between
    // `__sheap` and `_stack_start`), which is always mapped; a volatile read of a `u32` there
    // creates no reference and the program is single-threaded.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}

/// Fills `[lo, hi)` with the paint (before the heap is initialized: nothing lives there).
fn paint(lo: usize, hi: usize) {
    for a in (lo..hi).step_by(4) {
        // SAFETY: `[lo, hi)` is the heap arena, inside RAM, 4-aligned, not yet handed to the
        // allocator, so nothing else reads or writes it.
        unsafe { core::ptr::write_volatile(a as *mut u32, PAINT) };
    }
}

/// What the run took, in bytes.
struct Ram {
    data: usize,
    bss: usize,
    heap_touched: usize,
    /// Allocator peaks per window: load + prepare + baseline evaluation, training steps +
    /// final evaluation, hashing and comparing the weights.
    heap_windows: [usize; 3],
    stack: usize,
}

impl Ram {
    fn measure(heap_lo: usize, heap_hi: usize, stack_top: usize, windows: [usize; 3]) -> Ram {
        // Heap: highest word the allocator (or a block's owner) ever wrote.
        let heap_end = (heap_lo..heap_hi)
            .step_by(4)
            .rev()
            .find(|&a| word(a) != PAINT)
            .map_or(heap_lo, |a| a + 4);
        // Stack: lowest word a frame ever wrote.
        let stack_low = (heap_hi..stack_top)
            .step_by(4)
            .find(|&a| word(a) != PAINT)
            .unwrap_or(stack_top);
        Ram {
            data: addr!(__edata) - addr!(__sdata),
            bss: addr!(__ebss) - addr!(__sbss),
            heap_touched: heap_end - heap_lo,
            heap_windows: windows,
            stack: stack_top - stack_low,
        }
    }

    fn total(&self) -> usize {
        self.data + self.bss + self.heap_touched + self.stack
    }
}

fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[entry]
fn main() -> ! {
    let heap_lo = addr!(__sheap);
    let heap_hi = heap_lo + HEAP_SIZE;
    let stack_top = addr!(_stack_start);
    if heap_hi + 16 * 1024 > stack_top {
        hprintln!(
            "mcu-adapt: error: RAM too small: {HEAP_SIZE} B of heap from {heap_lo:#x} leaves \
             less than 16 KiB of stack below {stack_top:#x} (see memory.x)"
        );
        exit(false);
    }
    paint(heap_lo, heap_hi);
    // SAFETY: called once, before any allocation; `[heap_lo, heap_hi)` is RAM after `.bss`
    // that nothing else uses (the stack starts above it, checked just above).
    unsafe { HEAP.heap.init(heap_lo, HEAP_SIZE) };

    hprintln!(
        "mcu-adapt: Cortex-M4F firmware: flash .text {} B, .rodata {} B (model {} B + set {} B); \
         RAM {} B: heap {} B, stack {} B",
        addr!(__etext) - addr!(__stext),
        addr!(__erodata) - addr!(__srodata),
        MODEL.len(),
        SET.len(),
        stack_top - addr!(__sdata),
        HEAP_SIZE,
        stack_top - heap_hi
    );
    let settings = mcu_adapt::Settings::default();
    let mut windows = [0usize; 3];
    let result = mcu_adapt::run(MODEL, SET, &settings, &mut |phase, line| {
        hprintln!("{}", line);
        let w = match phase {
            Phase::Baseline => 0,
            Phase::Done => 1,
            Phase::Loaded | Phase::Step(_) => return,
        };
        windows[w] = HEAP.peak();
        HEAP.restart_peaks();
    });
    windows[2] = HEAP.peak();
    let ram = Ram::measure(heap_lo, heap_hi, stack_top, windows);
    match result {
        Ok((outcome, trained)) => {
            hprintln!("{}", outcome);
            hprintln!(
                "mcu-adapt ram: static={} data={} bss={} heap={} heap_setup={} heap_training={} \
                 heap_wrapup={} stack={} total={} budget={}",
                ram.data + ram.bss,
                ram.data,
                ram.bss,
                ram.heap_touched,
                ram.heap_windows[0],
                ram.heap_windows[1],
                ram.heap_windows[2],
                ram.stack,
                ram.total(),
                BUDGET
            );
            // After the RAM figures: the check below is not part of the adaptation.
            let dsp = mcu_adapt::check_dsp(MODEL, SET, &trained);
            match &dsp {
                Ok(line) => hprintln!("{}", line),
                Err(e) => hprintln!("mcu-adapt: error: DSP kernel path: {}", e),
            }
            if !outcome.improved() {
                hprintln!(
                    "mcu-adapt: error: accuracy did not rise above the pretrained baseline \
                     ({} -> {} of {})",
                    outcome.before.correct,
                    outcome.after.correct,
                    outcome.before.total
                );
            }
            exit(outcome.improved() && dsp.is_ok())
        }
        Err(e) => {
            hprintln!("mcu-adapt: error: {}", e);
            exit(false)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("mcu-adapt: error: panic: {}", info);
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("mcu-adapt: error: hard fault: {:?}", frame);
    exit(false)
}
