//! The training loop over any backend: frozen prefix once per batch, QZO-FF steps
//! on the trainable suffix.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use lastmile_core::backend::{Backend, BackendError, PreparedModel};
use lastmile_core::model::QuantModel;
use lastmile_core::quant::ActQuant;

use crate::loss::cross_entropy;
use crate::momentum::Momentum;
use crate::perturb::TrainableLayout;
use crate::split::{Split, frozen_prefix_len, split_at};
use crate::step::{StepConfig, StepError, StepReport, check_config, qzo_step_guided};

/// Trains one model on one backend.
#[derive(Debug)]
pub struct Trainer {
    model: QuantModel,
    split: Split,
    prefix: Option<Box<dyn PreparedModel>>,
    suffix: Box<dyn PreparedModel>,
    layout: TrainableLayout,
    config: StepConfig,
    momentum: Option<Momentum>,
    logits_quant: ActQuant,
    classes: usize,
    step: u64,
    features: Vec<i8>,
    logits: Vec<i8>,
}

impl Trainer {
    /// Prepares `model` on `backend`: cuts off the frozen prefix (prepared separately and
    /// run once per batch) and lays out the trainable tensors.
    pub fn new(
        backend: &dyn Backend,
        model: QuantModel,
        config: StepConfig,
    ) -> Result<Self, String> {
        check_config(&config).map_err(String::from)?;
        model.validate().map_err(|e| format!("{e}"))?;
        if model.num_trainable() == 0 {
            return Err("the model has no trainable parameters; mark some trainable first".into());
        }
        let cut = frozen_prefix_len(&model);
        let split = split_at(&model, cut)?;
        let prefix = match &split.prefix {
            Some(p) => Some(
                backend
                    .prepare(p)
                    .map_err(|e| format!("preparing the frozen prefix: {e}"))?,
            ),
            None => None,
        };
        let suffix = backend
            .prepare(&split.suffix)
            .map_err(|e| format!("preparing the trainable suffix: {e}"))?;
        let layout = TrainableLayout::sparse(&split.suffix, config.sparsity);
        let momentum = match &config.momentum {
            Some(mc) => Some(Momentum::new(mc, &layout).map_err(String::from)?),
            None => None,
        };
        let logits_quant = *model.act.last().ok_or("model has no output quantization")?;
        let classes = suffix.output_shape().iter().product();
        Ok(Trainer {
            model,
            split,
            prefix,
            suffix,
            layout,
            config,
            momentum,
            logits_quant,
            classes,
            step: 0,
            features: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Sets the step counter (when resuming from a checkpoint).
    pub fn set_steps(&mut self, step: u64) {
        self.step = step;
    }

    /// The configuration.
    pub fn config(&self) -> &StepConfig {
        &self.config
    }

    /// The momentum buffer of momentum-guided sampling (`None` when the switch is off):
    /// one Q8 `i16` per trainable element, to be saved in checkpoints.
    pub fn momentum_state(&self) -> Option<&[i16]> {
        self.momentum.as_ref().map(Momentum::state)
    }

    /// Restores the momentum buffer from a checkpoint (when resuming).
    pub fn set_momentum_state(&mut self, state: alloc::vec::Vec<i16>) -> Result<(), String> {
        let cfg = self
            .config
            .momentum
            .ok_or("this run has no momentum-guided sampling; there is no momentum to restore")?;
        let n = state.len();
        self.momentum = Some(
            Momentum::with_state(&cfg, &self.layout, state).map_err(|e| {
                format!(
                    "{e}: {n} momentum values for {} trainable elements",
                    self.layout.total
                )
            })?,
        );
        Ok(())
    }

    /// Nodes run once per batch (frozen prefix).
    pub fn prefix_nodes(&self) -> usize {
        self.split
            .prefix
            .as_ref()
            .map_or(0, |p| p.topology.nodes.len())
    }

    /// Trainable elements (after any sparse-update mask).
    pub fn trainable_elements(&self) -> u64 {
        self.layout.active()
    }

    /// Number of classes (logits per sample).
    pub fn classes(&self) -> usize {
        self.classes
    }

    fn run_prefix(&mut self, input: &[i8], n: usize) -> Result<(), BackendError> {
        match (&mut self.prefix, &self.split.prefix) {
            (Some(p), Some(m)) => p.forward(&m.params, input, n, &mut self.features),
            _ => {
                self.features.clear();
                self.features.extend_from_slice(input);
                Ok(())
            }
        }
    }

    /// One QZO-FF step on a batch (`n` samples of input codes, `labels`) at learning rate `lr`.
    pub fn step(&mut self, input: &[i8], labels: &[u8], lr: f64) -> Result<StepReport, String> {
        let n = labels.len();
        self.run_prefix(input, n)
            .map_err(|e| format!("prefix forward: {e}"))?;
        let (suffix, features, logits) = (&mut self.suffix, &self.features, &mut self.logits);
        let (quant, classes) = (self.logits_quant, self.classes);
        let loss = |params: &[lastmile_core::model::QParam]| -> Result<f64, BackendError> {
            suffix.forward(params, features, n, logits)?;
            Ok(cross_entropy(logits, quant, labels, classes).0)
        };
        let report = qzo_step_guided(
            &mut self.split.suffix.params,
            &self.layout,
            &self.config,
            self.step,
            lr,
            self.momentum.as_mut(),
            loss,
        )
        .map_err(|e: StepError<BackendError>| format!("step {}: {e}", self.step))?;
        self.step += 1;
        Ok(report)
    }

    /// Loss and correct count of the current weights on a batch (one forward).
    pub fn evaluate(&mut self, input: &[i8], labels: &[u8]) -> Result<(f64, usize), String> {
        let n = labels.len();
        self.run_prefix(input, n)
            .map_err(|e| format!("prefix forward: {e}"))?;
        self.suffix
            .forward(
                &self.split.suffix.params,
                &self.features,
                n,
                &mut self.logits,
            )
            .map_err(|e| format!("forward: {e}"))?;
        Ok(cross_entropy(
            &self.logits,
            self.logits_quant,
            labels,
            self.classes,
        ))
    }

    /// The model with the trained weights written back (a copy: the trainer keeps its
    /// own; [`Trainer::into_model`] avoids the copy when training is over).
    pub fn model(&self) -> QuantModel {
        let mut m = self.model.clone();
        for (i, &orig) in self.split.suffix_param_origin.iter().enumerate() {
            m.params[orig] = self.split.suffix.params[i].clone();
        }
        m
    }

    /// Ends training: the model with the trained weights written back, the same as
    /// [`Trainer::model`] but moving the weights instead of cloning them (the prepared
    /// models are dropped).
    pub fn into_model(self) -> QuantModel {
        let mut m = self.model;
        let suffix = self.split.suffix.params;
        for (p, &orig) in suffix.into_iter().zip(&self.split.suffix_param_origin) {
            m.params[orig] = p;
        }
        m
    }
}
