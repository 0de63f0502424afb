//! The one raw FFI call of this crate: reading the library's version before `ort`
//! takes it over, so a wrong file gives a clear error instead of a failed assertion.

use std::ffi::{CStr, c_char};
use std::path::Path;

/// `OrtApiBase` of `onnxruntime_c_api.h`: two function pointers.
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const core::ffi::c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

/// Opens `path`, checks it exports `OrtGetApiBase`, and returns `GetVersionString()`.
pub(crate) fn library_version(path: &Path) -> Result<String, String> {
    // SAFETY: loading a shared library runs its initializers; the file is the ONNX
    // Runtime library the user pointed us at (or the sha256-checked one from the wheel).
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("{} is not a loadable shared library: {e}", path.display()))?;
    // SAFETY: the symbol's type is `const OrtApiBase* ORT_API_CALL OrtGetApiBase(void)`
    // in every ONNX Runtime release.
    let get_base: libloading::Symbol<'_, unsafe extern "C" fn() -> *const OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase\0") }.map_err(|e| {
            format!(
                "{} does not export OrtGetApiBase (not an ONNX Runtime library?): {e}",
                path.display()
            )
        })?;
    // SAFETY: `OrtGetApiBase` takes no arguments and returns a pointer to a static struct.
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err(format!("{}: OrtGetApiBase() returned NULL", path.display()));
    }
    // SAFETY: `base` is non-null and points to the library's static `OrtApiBase`, whose
    // `GetVersionString` returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(((*base).get_version_string)()) };
    // Keep the library loaded: `ort` opens the same file next (dlopen refcounts it).
    std::mem::forget(lib);
    Ok(v.to_string_lossy().into_owned())
}
