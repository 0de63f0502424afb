//! The only module with `unsafe`: loading the library, checking its table, and calling
//! through it. Everything it exposes is safe; every failure becomes a message naming the
//! library and the problem.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, c_void};
use std::path::Path;
use std::sync::Arc;

use crate::bindings::{
    LM_ABI_VERSION_1, LmBackendV1, LmCapabilities, LmGraph, LmInstance, LmModel, LmMultiplier,
    LmNode, LmParam, LmValue,
};

/// Why a library could not be used; `hint` is the command or step that fixes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoadError {
    pub(crate) problem: String,
    pub(crate) hint: String,
}

fn load_err(problem: impl Into<String>, hint: impl Into<String>) -> LoadError {
    LoadError {
        problem: problem.into(),
        hint: hint.into(),
    }
}

/// Copies a C string the plugin owns; `None` for NULL.
fn c_string(p: *const std::ffi::c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the ABI requires every non-NULL string the plugin hands out to be
    // NUL-terminated and to stay valid until the next call on the instance; we copy it
    // before making another call (the caller holds the instance lock).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The checked function table: every pointer non-NULL (checked in [`Library::open`]).
#[derive(Clone, Copy)]
struct Table {
    create: unsafe extern "C" fn(*mut *mut LmInstance) -> i32,
    capabilities: unsafe extern "C" fn(*mut LmInstance, *mut LmCapabilities) -> i32,
    prepare: unsafe extern "C" fn(*mut LmInstance, *const LmGraph, *mut *mut LmModel) -> i32,
    set_weights:
        unsafe extern "C" fn(*mut LmInstance, *mut LmModel, u32, *const c_void, u64) -> i32,
    forward: unsafe extern "C" fn(
        *mut LmInstance,
        *mut LmModel,
        *const i8,
        u64,
        u64,
        *mut i8,
        u64,
    ) -> i32,
    last_error: unsafe extern "C" fn(*mut LmInstance) -> *const std::ffi::c_char,
    release_model: unsafe extern "C" fn(*mut LmInstance, *mut LmModel),
    destroy: unsafe extern "C" fn(*mut LmInstance),
}

/// A loaded, checked plugin library. Kept alive (in an `Arc`) by every instance.
pub(crate) struct Library {
    table: Table,
    // Last field: dropped after everything that might still call into it.
    _lib: libloading::Library,
}

/// Other ABI entry points we know the names of, to say which versions a library speaks.
const OTHER_ENTRY_POINTS: [(&[u8], u32); 3] = [
    (b"lastmile_backend_v2\0", 2),
    (b"lastmile_backend_v3\0", 3),
    (b"lastmile_backend_v0\0", 0),
];

impl Library {
    /// Loads `path`, resolves `lastmile_backend_v1`, checks the ABI version, every struct
    /// size and every function pointer.
    pub(crate) fn open(path: &Path) -> Result<Arc<Library>, LoadError> {
        let rebuild =
            "rebuild the plugin against backends/plugin/include/lastmile_backend.h (ABI version 1)";
        if !path.exists() {
            return Err(load_err(
                "no such file",
                "correct the path in LASTMILE_PLUGINS / --plugin, or build the plugin (the example: `cargo build -p lastmile-example-npu`; `cargo run -q -p lastmile-example-npu` prints its path)",
            ));
        }
        // SAFETY: loading a library runs its initializers; that is the point of a plugin and
        // the user chose this file. Nothing else about the process is assumed.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
            load_err(
                format!("cannot be loaded as a shared library: {e}"),
                format!(
                    "check it is a shared library for this platform (`file {0}`) and that its dependencies resolve (`ldd {0}`)",
                    path.display()
                ),
            )
        })?;
        // SAFETY: the symbol, if present, has the type the ABI declares for it
        // (`const LmBackendV1 *(*)(void)`); the `Symbol` borrow ends before `lib` moves.
        let entry = unsafe {
            lib.get::<unsafe extern "C" fn() -> *const LmBackendV1>(b"lastmile_backend_v1\0")
        }
        .map(|s| *s);
        let entry = match entry {
            Ok(f) => f,
            Err(e) => {
                let others: Vec<String> = OTHER_ENTRY_POINTS
                    .iter()
                    // SAFETY: only probing whether the symbol exists; it is never called.
                    .filter(|(name, _)| unsafe { lib.get::<*const c_void>(name) }.is_ok())
                    .map(|(name, v)| {
                        format!(
                            "{} (ABI version {v})",
                            String::from_utf8_lossy(&name[..name.len() - 1])
                        )
                    })
                    .collect();
                let also = if others.is_empty() {
                    String::new()
                } else {
                    format!("; it exports {} instead", others.join(", "))
                };
                return Err(load_err(
                    format!(
                        "does not export the entry point `lastmile_backend_v1` (missing symbol: {e}){also}"
                    ),
                    format!(
                        "`nm -D {} | grep lastmile_backend` lists what it exports; {rebuild}",
                        path.display()
                    ),
                ));
            }
        };
        // SAFETY: `entry` is the plugin's ABI v1 entry point, declared to take no arguments
        // and return a pointer to a static table (or NULL).
        let table = unsafe { entry() };
        if table.is_null() {
            return Err(load_err(
                "`lastmile_backend_v1()` returned NULL",
                "the plugin must return a pointer to its static LmBackendV1 table",
            ));
        }
        // SAFETY: non-NULL and, per the ABI, a static table that lives as long as the library.
        // Only the first two `u32` fields are read before their layout is confirmed: every
        // ABI version starts with `abi_version` and `sizeof_table`.
        let (version, sizeof_table) = unsafe {
            let head = table.cast::<u32>();
            (head.read(), head.add(1).read())
        };
        if version != LM_ABI_VERSION_1 {
            return Err(load_err(
                format!(
                    "reports plugin ABI version {version}, but this lastmile speaks version {LM_ABI_VERSION_1}"
                ),
                rebuild,
            ));
        }
        if sizeof_table as usize != size_of::<LmBackendV1>() {
            return Err(load_err(
                format!(
                    "its LmBackendV1 table has {sizeof_table} bytes, this lastmile expects {}",
                    size_of::<LmBackendV1>()
                ),
                rebuild,
            ));
        }
        // SAFETY: version and size match ours, so the table has our layout.
        let t: LmBackendV1 = unsafe { table.read() };
        let sizes = [
            (
                "LmCapabilities",
                t.sizeof_capabilities,
                size_of::<LmCapabilities>(),
            ),
            ("LmGraph", t.sizeof_graph, size_of::<LmGraph>()),
            ("LmNode", t.sizeof_node, size_of::<LmNode>()),
            ("LmParam", t.sizeof_param, size_of::<LmParam>()),
            ("LmValue", t.sizeof_value, size_of::<LmValue>()),
            (
                "LmMultiplier",
                t.sizeof_multiplier,
                size_of::<LmMultiplier>(),
            ),
        ];
        for (name, theirs, ours) in sizes {
            if theirs as usize != ours {
                return Err(load_err(
                    format!(
                        "was compiled with sizeof({name}) = {theirs}, this lastmile has {ours} (header mismatch)"
                    ),
                    rebuild,
                ));
            }
        }
        let null = |f: &str| {
            load_err(
                format!("its LmBackendV1 table has a NULL `{f}` function pointer"),
                "the plugin must fill every function pointer of LmBackendV1; rebuild it",
            )
        };
        let table = Table {
            create: t.create.ok_or_else(|| null("create"))?,
            capabilities: t.capabilities.ok_or_else(|| null("capabilities"))?,
            prepare: t.prepare.ok_or_else(|| null("prepare"))?,
            set_weights: t.set_weights.ok_or_else(|| null("set_weights"))?,
            forward: t.forward.ok_or_else(|| null("forward"))?,
            last_error: t.last_error.ok_or_else(|| null("last_error"))?,
            release_model: t.release_model.ok_or_else(|| null("release_model"))?,
            destroy: t.destroy.ok_or_else(|| null("destroy"))?,
        };
        Ok(Arc::new(Library { table, _lib: lib }))
    }
}

/// A plugin instance. Not `Sync`: the caller serializes calls with a lock, as the ABI asks.
pub(crate) struct Instance {
    lib: Arc<Library>,
    inst: *mut LmInstance,
}

// SAFETY: the ABI lets an instance be used from any thread as long as calls on it are
// serialized; `Instance` has no `Sync` and every user holds it behind a `Mutex`.
unsafe impl Send for Instance {}

/// A failed call: the plugin's code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CallError {
    pub(crate) call: &'static str,
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let msg = if self.message.is_empty() {
            "(no message from last_error)"
        } else {
            &self.message
        };
        write!(f, "{} failed with code {}: {msg}", self.call, self.code)
    }
}

/// Plain-data capabilities as the plugin reported them (strings copied).
#[derive(Clone, Debug)]
pub(crate) struct RawCaps {
    pub(crate) op_mask: u32,
    pub(crate) weight_bits_mask: u32,
    pub(crate) weight_updates: u32,
    pub(crate) exactness: u32,
    pub(crate) max_lsb: u32,
    pub(crate) threads: u32,
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) update_cost: Option<String>,
    pub(crate) exactness_note: Option<String>,
}

/// A handle to a prepared model, released on drop (while holding the instance lock is the
/// caller's job: see [`Instance::release`]).
pub(crate) struct ModelPtr(*mut LmModel);

// SAFETY: the handle is only used through `Instance` methods, which the caller serializes
// with the instance's lock; the plugin model has no thread affinity under the ABI.
unsafe impl Send for ModelPtr {}

impl Instance {
    /// Calls `create`.
    pub(crate) fn create(lib: Arc<Library>) -> Result<Instance, CallError> {
        let mut inst: *mut LmInstance = std::ptr::null_mut();
        // SAFETY: `create` is non-NULL (checked at load) and gets a valid out-pointer.
        let code = unsafe { (lib.table.create)(&mut inst) };
        let me = Instance { lib, inst };
        if code != 0 || me.inst.is_null() {
            let message = if me.inst.is_null() {
                "(no instance to ask for a message)".to_string()
            } else {
                me.last_error()
            };
            // `me` drops here and destroys the half-made instance, as the ABI says.
            return Err(CallError {
                call: "create",
                code,
                message: if code == 0 {
                    "returned success but no instance".into()
                } else {
                    message
                },
            });
        }
        Ok(me)
    }

    fn last_error(&self) -> String {
        // SAFETY: `last_error` is non-NULL and `inst` is a live instance of this library.
        let p = unsafe { (self.lib.table.last_error)(self.inst) };
        c_string(p).unwrap_or_default()
    }

    fn check(&self, call: &'static str, code: i32) -> Result<(), CallError> {
        if code == 0 {
            Ok(())
        } else {
            Err(CallError {
                call,
                code,
                message: self.last_error(),
            })
        }
    }

    /// Calls `capabilities`.
    pub(crate) fn capabilities(&mut self) -> Result<RawCaps, CallError> {
        let mut caps = LmCapabilities {
            struct_size: size_of::<LmCapabilities>() as u32,
            op_mask: 0,
            weight_bits_mask: 0,
            weight_updates: 0,
            exactness: 0,
            max_lsb: 0,
            threads: 0,
            name: std::ptr::null(),
            version: std::ptr::null(),
            description: std::ptr::null(),
            update_cost: std::ptr::null(),
            exactness_note: std::ptr::null(),
        };
        // SAFETY: live instance; `caps` is a valid, initialized struct of the size we state.
        let code = unsafe { (self.lib.table.capabilities)(self.inst, &mut caps) };
        self.check("capabilities", code)?;
        Ok(RawCaps {
            op_mask: caps.op_mask,
            weight_bits_mask: caps.weight_bits_mask,
            weight_updates: caps.weight_updates,
            exactness: caps.exactness,
            max_lsb: caps.max_lsb,
            threads: caps.threads,
            name: c_string(caps.name),
            version: c_string(caps.version),
            description: c_string(caps.description),
            update_cost: c_string(caps.update_cost),
            exactness_note: c_string(caps.exactness_note),
        })
    }

    /// Calls `prepare`. `graph` and everything it points to must be valid for the call,
    /// which [`crate::graph::GraphDesc`] guarantees while it is borrowed.
    pub(crate) fn prepare(&mut self, graph: &LmGraph) -> Result<ModelPtr, CallError> {
        let mut model: *mut LmModel = std::ptr::null_mut();
        // SAFETY: live instance; `graph` points to arrays owned by a `GraphDesc` that
        // outlives this call (it is borrowed by the caller), with the counts it states.
        let code = unsafe { (self.lib.table.prepare)(self.inst, graph, &mut model) };
        self.check("prepare", code)?;
        if model.is_null() {
            return Err(CallError {
                call: "prepare",
                code,
                message: "returned success but no model".into(),
            });
        }
        Ok(ModelPtr(model))
    }

    /// Calls `set_weights` with `data` (`numel` elements of the parameter's dtype).
    pub(crate) fn set_weights<T: Copy>(
        &mut self,
        model: &ModelPtr,
        param: u32,
        data: &[T],
    ) -> Result<(), CallError> {
        // SAFETY: live instance and model of this instance; `data` is a valid slice of
        // `data.len()` elements for the duration of the call (the plugin copies it).
        let code = unsafe {
            (self.lib.table.set_weights)(
                self.inst,
                model.0,
                param,
                data.as_ptr().cast::<c_void>(),
                data.len() as u64,
            )
        };
        self.check("set_weights", code)
    }

    /// Calls `forward`.
    pub(crate) fn forward(
        &mut self,
        model: &ModelPtr,
        input: &[i8],
        n: usize,
        output: &mut [i8],
    ) -> Result<(), CallError> {
        // SAFETY: live instance and model; `input` and `output` are valid for the lengths
        // passed, and `output` is exclusively borrowed for the call.
        let code = unsafe {
            (self.lib.table.forward)(
                self.inst,
                model.0,
                input.as_ptr(),
                input.len() as u64,
                n as u64,
                output.as_mut_ptr(),
                output.len() as u64,
            )
        };
        self.check("forward", code)
    }

    /// Releases a model of this instance.
    pub(crate) fn release(&mut self, model: ModelPtr) {
        // SAFETY: `model` came from `prepare` on this instance and is released once (moved).
        unsafe { (self.lib.table.release_model)(self.inst, model.0) }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.inst.is_null() {
            // SAFETY: a live instance of this library, destroyed once; its models hold an
            // `Arc` to the `Mutex<Instance>`, so none is alive any more.
            unsafe { (self.lib.table.destroy)(self.inst) }
        }
    }
}
