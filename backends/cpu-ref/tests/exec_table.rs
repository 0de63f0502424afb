//! The shared executor with a custom kernel table: overridden slots are called, the others
//! fall back to the reference, `refresh` runs before (and only for) nodes with trainable
//! parameters, results equal cpu-ref's for the forward's current parameters, and a
//! `refresh` or slot error stops the forward and comes out of it as is.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lastmile_backend_cpu_ref::exec::{Executor, KernelTable, LinearArgs, NodeInfo};
use lastmile_backend_cpu_ref::run;
use lastmile_core::ValueId;
use lastmile_core::backend::{BackendError, PreparedModel};
use lastmile_core::graph::{Linear, Node, Op, ParamId, ParamRole, Topology};
use lastmile_core::model::{ParamSpec, QData, QParam, QuantModel};
use lastmile_core::quant::{ActQuant, Activation, WeightBits};

/// Counts its calls; `linear` delegates to the reference.
#[derive(Debug, Default)]
struct Counting {
    prepared: AtomicUsize,
    linear: AtomicUsize,
    /// Node index of every `refresh` call, in order.
    refreshed: Mutex<Vec<usize>>,
    /// `refresh` fails (after recording the call).
    fail: AtomicBool,
    /// The `linear` slot fails on this node (after counting the call).
    fail_linear_at: Mutex<Option<usize>>,
}

/// Per node: how many times it was refreshed.
#[derive(Debug, Default)]
struct State {
    refreshed: usize,
    index: usize,
}

impl KernelTable for Counting {
    type NodeState = State;
    type Scratch = Vec<usize>;

    fn prepare_node(
        &self,
        info: NodeInfo<'_>,
        _params: &[QParam],
        _scratch: &mut Vec<usize>,
    ) -> Result<State, BackendError> {
        self.prepared.fetch_add(1, Ordering::Relaxed);
        Ok(State {
            refreshed: 0,
            index: info.index,
        })
    }

    fn refresh(
        &self,
        info: NodeInfo<'_>,
        state: &mut State,
        params: &[QParam],
        scratch: &mut Vec<usize>,
    ) -> Result<(), BackendError> {
        assert_eq!(info.index, state.index);
        let (w, _) = info.dot_params().expect("only conv/linear have parameters");
        assert!(params[w].spec.trainable);
        state.refreshed += 1;
        scratch.push(info.index);
        self.refreshed.lock().unwrap().push(info.index);
        if self.fail.load(Ordering::Relaxed) {
            return Err(BackendError::Engine(format!(
                "node {}: refresh failed",
                info.index
            )));
        }
        Ok(())
    }

    fn linear(
        &self,
        state: &mut State,
        _scratch: &mut Vec<usize>,
        args: &LinearArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        self.linear.fetch_add(1, Ordering::Relaxed);
        if *self.fail_linear_at.lock().unwrap() == Some(state.index) {
            return Err(BackendError::Engine(format!(
                "node {}: operator failed",
                state.index
            )));
        }
        args.reference(y);
        Ok(())
    }
}

fn linear_param(name: &str, out: usize, f: usize, trainable: bool, seed: i32) -> QParam {
    QParam {
        spec: ParamSpec {
            name: name.into(),
            shape: vec![out, f],
            role: ParamRole::Weight,
            trainable,
        },
        data: QData::I8(
            (0..(out * f) as i32)
                .map(|i| ((i * 37 + seed) % 255 - 127) as i8)
                .collect(),
        ),
        scales: vec![0.01; out],
    }
}

fn model() -> QuantModel {
    let node = |name: &str, w: u32, input: u32| Node {
        name: name.into(),
        op: Op::Linear(Linear {
            weight: ParamId(w),
            bias: None,
            activation: Activation::None,
        }),
        inputs: vec![ValueId(input)],
    };
    let m = QuantModel {
        topology: Topology {
            input_shape: vec![6],
            nodes: vec![node("fc1", 0, 0), node("fc2", 1, 1)],
        },
        weight_bits: WeightBits::W8,
        params: vec![
            linear_param("fc1.weight", 5, 6, true, 1),
            linear_param("fc2.weight", 4, 5, false, 2),
        ],
        act: vec![
            ActQuant {
                scale: 0.05,
                zero_point: -3,
            },
            ActQuant {
                scale: 0.1,
                zero_point: 4,
            },
            ActQuant {
                scale: 0.2,
                zero_point: 0,
            },
        ],
        metadata: Default::default(),
    };
    m.validate().expect("valid model");
    m
}

#[test]
fn custom_table_overrides_slots_and_refreshes_trainable_nodes() {
    let m = model();
    let mut exec = Executor::new(Counting::default(), &m).unwrap();
    assert_eq!(exec.table().prepared.load(Ordering::Relaxed), 2);
    let input: Vec<i8> = (0..12).map(|i| (i * 23 % 256 - 128) as i8).collect();
    let mut out = Vec::new();
    exec.forward(&m.params, &input, 2, &mut out).unwrap();
    assert_eq!(out, run(&m, &input, 2).unwrap());
    // New trainable weights: the forward must use them.
    let mut now = m.clone();
    now.params[0] = linear_param("fc1.weight", 5, 6, true, 99);
    exec.forward(&now.params, &input, 2, &mut out).unwrap();
    assert_eq!(out, run(&now, &input, 2).unwrap());
    assert_ne!(run(&now, &input, 2).unwrap(), run(&m, &input, 2).unwrap());
    assert_eq!(exec.table().linear.load(Ordering::Relaxed), 4);
    // `values` holds every value but the input (read in place).
    assert!(exec.values()[0].is_empty());
    assert_eq!(exec.values()[1].len(), 2 * 5);
}

#[test]
fn refresh_runs_only_for_trainable_nodes() {
    let m = model();
    let mut exec = Executor::new(Counting::default(), &m).unwrap();
    let input = vec![0i8; 6];
    let mut out = Vec::new();
    for _ in 0..3 {
        exec.forward(&m.params, &input, 1, &mut out).unwrap();
    }
    // fc1 (trainable) is refreshed before every forward's run of it, fc2 (frozen) never.
    assert_eq!(*exec.table().refreshed.lock().unwrap(), vec![0, 0, 0]);
    assert_eq!(exec.table().linear.load(Ordering::Relaxed), 6);
    // A refresh error stops the forward before the node runs and comes out as is.
    exec.table().fail.store(true, Ordering::Relaxed);
    let err = exec.forward(&m.params, &input, 1, &mut out).unwrap_err();
    assert_eq!(err, BackendError::Engine("node 0: refresh failed".into()));
    assert_eq!(exec.table().linear.load(Ordering::Relaxed), 6);
    assert_eq!(*exec.table().refreshed.lock().unwrap(), vec![0, 0, 0, 0]);
}

#[test]
fn slot_error_stops_the_forward_and_comes_out_as_is() {
    let m = model();
    let mut exec = Executor::new(Counting::default(), &m).unwrap();
    let input: Vec<i8> = (0..6).map(|i| (i * 41 % 256 - 128) as i8).collect();
    let mut out = Vec::new();
    exec.forward(&m.params, &input, 1, &mut out).unwrap();
    assert_eq!(exec.table().linear.load(Ordering::Relaxed), 2);
    // fc1's slot fails: the error is the slot's, unchanged, and fc2 never runs.
    *exec.table().fail_linear_at.lock().unwrap() = Some(0);
    let mut out = vec![7i8; 3];
    let err = exec.forward(&m.params, &input, 1, &mut out).unwrap_err();
    assert_eq!(err, BackendError::Engine("node 0: operator failed".into()));
    assert_eq!(exec.table().linear.load(Ordering::Relaxed), 3);
    // The caller's output is left alone.
    assert_eq!(out, vec![7i8; 3]);
    // Same for the last node: it ran (and failed) after fc1, and nothing after it.
    *exec.table().fail_linear_at.lock().unwrap() = Some(1);
    let err = exec.forward(&m.params, &input, 1, &mut out).unwrap_err();
    assert_eq!(err, BackendError::Engine("node 1: operator failed".into()));
    assert_eq!(exec.table().linear.load(Ordering::Relaxed), 5);
    assert_eq!(out, vec![7i8; 3]);
    // Once the slot succeeds again, forwards are whole and exact.
    *exec.table().fail_linear_at.lock().unwrap() = None;
    exec.forward(&m.params, &input, 1, &mut out).unwrap();
    assert_eq!(out, run(&m, &input, 1).unwrap());
    assert_eq!(exec.table().linear.load(Ordering::Relaxed), 7);
}
