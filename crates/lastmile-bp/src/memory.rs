//! Analytic memory of one backpropagation step, for comparison with the
//! forward-gradient trainer (which stores no activations and no gradients).

use lastmile_core::model::FloatModel;

use crate::{BpError, Optimizer};

/// Bytes held during one BP training step of a model on a batch, everything f32.
///
/// This is the algorithm's own requirement, independent of the framework:
/// the candle implementation adds temporaries on top (im2col columns of
/// `K²×` a conv's input, pre-activation tensors, gradient buffers of
/// activations during the backward pass), so measured peaks are higher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBreakdown {
    /// Every parameter (trainable or frozen): `Σ numel × 4`.
    pub weights: usize,
    /// One gradient per trainable parameter: `trainable × 4`.
    pub gradients: usize,
    /// Optimizer state: `trainable × 4 ×` 0 (plain SGD), 1 (momentum) or 2 (Adam).
    pub optimizer_state: usize,
    /// Values kept from the forward pass for the backward pass:
    /// `batch × Π shape × 4` for each value that an op on the gradient path reads,
    /// plus the logits (softmax). An op is on the gradient path if it has a
    /// trainable parameter or reads a value that depends on one. With every
    /// parameter trainable (FT) this is every value of the graph, input included;
    /// with only the head trainable (LP) it is the head's input and the logits.
    pub activations_saved: usize,
    /// Which values (0 = input, `i + 1` = node `i`) are counted in `activations_saved`.
    pub saved_values: Vec<usize>,
    /// Values alive only during the forward pass, at their peak: the forward pass keeps
    /// every saved value produced so far plus the unsaved values still to be read (freed
    /// after their last reader, as in inference); this is that peak minus
    /// `activations_saved`. With only the head trainable (LP) it is the frozen backbone's
    /// transient activations; with FT, where every value is saved, it is 0.
    pub activations_transient: usize,
    /// Trainable parameter count (elements).
    pub trainable_params: usize,
    /// Batch size the estimate is for.
    pub batch: usize,
}

impl MemoryBreakdown {
    /// Sum of all byte counts.
    pub fn total(&self) -> usize {
        self.weights
            + self.gradients
            + self.optimizer_state
            + self.activations_saved
            + self.activations_transient
    }
}

/// Analytic bytes of one BP step of `model` (with its current `trainable`
/// flags) on `batch` samples with `optimizer`.
pub fn step_memory_estimate(
    model: &FloatModel,
    batch: usize,
    optimizer: &Optimizer,
) -> Result<MemoryBreakdown, BpError> {
    let shapes = model.validate()?;
    const F32: usize = 4;
    let weights = model.params.iter().map(|p| p.spec.numel()).sum::<usize>() * F32;
    let trainable: usize = model
        .params
        .iter()
        .filter(|p| p.spec.trainable)
        .map(|p| p.spec.numel())
        .sum();
    // depends[v]: value v depends on a trainable parameter.
    let mut depends = vec![false; shapes.len()];
    let mut saved = vec![false; shapes.len()];
    for (i, node) in model.topology.nodes.iter().enumerate() {
        let has_trainable = node
            .op
            .params()
            .iter()
            .any(|(p, _)| model.params[p.index()].spec.trainable);
        let on_path = has_trainable || node.inputs.iter().any(|v| depends[v.index()]);
        depends[i + 1] = on_path;
        if on_path {
            for v in &node.inputs {
                saved[v.index()] = true;
            }
        }
    }
    let out = shapes.len() - 1;
    if depends[out] {
        saved[out] = true;
    }
    let saved_values: Vec<usize> = (0..shapes.len()).filter(|&v| saved[v]).collect();
    let activations_saved = saved_values
        .iter()
        .map(|&v| shapes[v].iter().product::<usize>())
        .sum::<usize>()
        * batch
        * F32;
    // The forward pass: value v is alive from its node until its last reader, or until the
    // backward pass if saved (the output counts as read after the last node).
    let n = model.topology.nodes.len();
    let size = |v: usize| shapes[v].iter().product::<usize>();
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
        for (v, (&last, &kept)) in last_use.iter().zip(&saved).enumerate().take(i + 1) {
            if last == i && !kept {
                live -= size(v);
            }
        }
    }
    let activations_transient = (peak * batch * F32).saturating_sub(activations_saved);
    Ok(MemoryBreakdown {
        weights,
        gradients: trainable * F32,
        optimizer_state: trainable * F32 * optimizer.state_per_param(),
        activations_saved,
        saved_values,
        activations_transient,
        trainable_params: trainable,
        batch,
    })
}
