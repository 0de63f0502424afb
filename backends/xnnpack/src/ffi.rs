//! Every call into XNNPACK: loading the library, and one owned convolution operator.

use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;

use crate::bindings::{self, Xnnpack, xnn_operator_t, xnn_status};

/// Bytes XNNPACK may read past the end of an input buffer.
pub(crate) const EXTRA_BYTES: usize = bindings::XNN_EXTRA_BYTES as usize;

/// Environment variable naming the XNNPACK shared library to load.
pub const ENV_XNNPACK_LIB: &str = "LASTMILE_XNNPACK_LIB";
/// Debian's library (package libxnnpack0, pulled in by libxnnpack-dev).
pub const DEFAULT_LIB: &str = "libXNNPACK.so.0";
/// The command that installs it.
pub const INSTALL_COMMAND: &str = "cargo xtask sdk xnnpack";

/// The library this process loads: [`ENV_XNNPACK_LIB`], else [`DEFAULT_LIB`] (found by
/// the dynamic loader's search path).
pub fn lib_path() -> PathBuf {
    match std::env::var_os(ENV_XNNPACK_LIB) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_LIB),
    }
}

/// The loaded, initialized library.
pub(crate) struct Lib {
    x: Xnnpack,
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

fn status_name(s: xnn_status) -> &'static str {
    match s {
        bindings::xnn_status_xnn_status_success => "success",
        bindings::xnn_status_xnn_status_uninitialized => "uninitialized",
        bindings::xnn_status_xnn_status_invalid_parameter => "invalid parameter",
        bindings::xnn_status_xnn_status_invalid_state => "invalid state",
        bindings::xnn_status_xnn_status_unsupported_parameter => "unsupported parameter",
        bindings::xnn_status_xnn_status_unsupported_hardware => "unsupported hardware",
        bindings::xnn_status_xnn_status_out_of_memory => "out of memory",
        _ => "unknown status",
    }
}

/// Opens and checks a library file (every symbol the bindings need) and initializes
/// XNNPACK. The error names the path, the problem and the fix.
pub fn probe(path: &std::path::Path) -> Result<(), String> {
    open(path).map(|_| ())
}

fn open(path: &std::path::Path) -> Result<Lib, String> {
    let fix = format!("run `{INSTALL_COMMAND}` or set {ENV_XNNPACK_LIB} to a libXNNPACK.so");
    // SAFETY: loading a shared library runs its initializers; this is the XNNPACK library
    // the user installed or named. `from_library` resolves every symbol of the committed
    // bindings with the signatures of the same xnnpack.h, failing on any missing one.
    let x = unsafe { Xnnpack::new(path) }
        .map_err(|e| format!("cannot load XNNPACK from {}: {e} ({fix})", path.display()))?;
    // SAFETY: `xnn_initialize(NULL)` uses the default allocator; it is idempotent and
    // thread-safe (pthread_once inside).
    let s = unsafe { x.xnn_initialize(ptr::null()) };
    if s != bindings::xnn_status_xnn_status_success {
        return Err(format!(
            "xnn_initialize failed in {}: {} (status {s}; this CPU may lack SSE2/AVX support the build needs)",
            path.display(),
            status_name(s)
        ));
    }
    Ok(Lib { x })
}

pub(crate) fn lib() -> Result<&'static Lib, String> {
    LIB.get_or_init(|| open(&lib_path()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Parameters of `xnn_create_convolution2d_nhwc_qc8`.
#[derive(Debug)]
pub(crate) struct ConvParams<'a> {
    /// `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub group_in: usize,
    pub group_out: usize,
    pub x_zp: i32,
    pub x_scale: f32,
    /// One per output channel.
    pub w_scales: &'a [f32],
    /// `[groups · group_out, KH, KW, group_in]`.
    pub weights: &'a [i8],
    pub bias: Option<&'a [i32]>,
    pub y_zp: i32,
    pub y_scale: f32,
    pub lo: i32,
    pub hi: i32,
}

/// An owned XNNPACK operator (deleted on drop).
pub(crate) struct Operator {
    op: xnn_operator_t,
    lib: &'static Lib,
}

// SAFETY: an XNNPACK operator is a heap object with no thread affinity; `Operator` is
// only used through `&mut self` (setup + run), so never from two threads at once.
unsafe impl Send for Operator {}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "xnn_operator({:p})", self.op)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // SAFETY: `op` was created by this library and is deleted exactly once.
        unsafe {
            self.lib.x.xnn_delete_operator(self.op);
        }
    }
}

impl Lib {
    /// Creates (and packs the weights of) a qc8 convolution. XNNPACK copies the weights
    /// and bias, so the slices need not outlive the call.
    pub(crate) fn create_conv(&'static self, p: &ConvParams<'_>) -> Result<Operator, String> {
        let c_out = p.groups * p.group_out;
        let k = p.kernel[0] * p.kernel[1] * p.group_in;
        if p.w_scales.len() != c_out
            || p.weights.len() != c_out * k
            || p.bias.is_some_and(|b| b.len() != c_out)
        {
            return Err("weight, scale or bias length does not match the shape".into());
        }
        let (Ok(lo), Ok(hi), Ok(xz), Ok(yz)) = (
            i8::try_from(p.lo),
            i8::try_from(p.hi),
            i8::try_from(p.x_zp),
            i8::try_from(p.y_zp),
        ) else {
            return Err("zero point or clamp outside int8".into());
        };
        let u = |v: usize| u32::try_from(v).map_err(|_| format!("{v} does not fit u32"));
        let mut op: xnn_operator_t = ptr::null_mut();
        // SAFETY: the pointers come from slices whose lengths were checked against the
        // shape above (kernel `c_out·k`, scales and bias `c_out`); `op` is a valid out
        // pointer. XNNPACK reads them only during this call.
        let s = unsafe {
            self.x.xnn_create_convolution2d_nhwc_qc8(
                u(p.padding[0])?,
                u(p.padding[3])?,
                u(p.padding[2])?,
                u(p.padding[1])?,
                u(p.kernel[0])?,
                u(p.kernel[1])?,
                u(p.stride[0])?,
                u(p.stride[1])?,
                u(p.dilation[0])?,
                u(p.dilation[1])?,
                u(p.groups)?,
                p.group_in,
                p.group_out,
                p.groups * p.group_in,
                c_out,
                xz,
                p.x_scale,
                p.w_scales.as_ptr(),
                p.weights.as_ptr(),
                p.bias.map_or(ptr::null(), |b| b.as_ptr()),
                yz,
                p.y_scale,
                lo,
                hi,
                0,
                &mut op,
            )
        };
        if s != bindings::xnn_status_xnn_status_success || op.is_null() {
            return Err(format!(
                "xnn_create_convolution2d_nhwc_qc8: {}",
                status_name(s)
            ));
        }
        Ok(Operator { op, lib: self })
    }
}

impl Operator {
    /// Runs the convolution on `n` NHWC images of `h × w` (single-threaded).
    /// `input` must hold `n·h·w·C_in` codes plus [`EXTRA_BYTES`]; `output` exactly the
    /// output size (`n·H_out·W_out·C_out`), which the caller derived from the same shape.
    pub(crate) fn run(
        &mut self,
        n: usize,
        h: usize,
        w: usize,
        in_codes: usize,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), String> {
        if input.len() < in_codes + EXTRA_BYTES {
            return Err(format!(
                "input buffer of {} bytes lacks XNN_EXTRA_BYTES padding after {in_codes} codes",
                input.len()
            ));
        }
        // SAFETY: `op` is a live qc8 convolution; `input` holds the `n·h·w` pixels of
        // `C_in` codes plus the over-read padding (checked above) and `output` the
        // caller-checked output size. Both stay borrowed until `xnn_run_operator` returns.
        let s = unsafe {
            self.lib.x.xnn_setup_convolution2d_nhwc_qc8(
                self.op,
                n,
                h,
                w,
                input.as_ptr(),
                output.as_mut_ptr(),
                ptr::null_mut(),
            )
        };
        if s != bindings::xnn_status_xnn_status_success {
            return Err(format!(
                "xnn_setup_convolution2d_nhwc_qc8: {}",
                status_name(s)
            ));
        }
        // SAFETY: set up just above with buffers that are still borrowed; NULL threadpool
        // runs on this thread.
        let s = unsafe { self.lib.x.xnn_run_operator(self.op, ptr::null_mut()) };
        if s != bindings::xnn_status_xnn_status_success {
            return Err(format!("xnn_run_operator: {}", status_name(s)));
        }
        Ok(())
    }
}
