//! `lastmile new`: a float model from the zoo with a closed-form head.
//!
//! The convolutions keep their seeded He-uniform random weights (random
//! features); the final linear layer is fitted by ridge regression on the
//! training split's penultimate features, then temperature-scaled. This is the
//! zero-setup float model until a backprop pretrainer lands.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use clap::builder::PossibleValuesParser;
use lastmile_core::graph::Op;
use lastmile_core::{ValueId, float_exec, zoo};
use lastmile_data::Split;
use serde::Serialize;

use crate::evaluate::{Score, eval_float, first_indices};
use crate::ridge::{NormalEquations, fit_temperature};
use crate::util::{self, images_f32, open_dataset, progress};
use crate::{JsonFlag, Ui};

/// Arguments of `lastmile new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Architecture: digits-cnn (8x8x1, two convs + linear), mnist-cnn (28x28x1, convs,
    /// depthwise-separable block, global pool + linear), resnet-tiny (any HxWxC, two residual blocks),
    /// resnet18 (any HxHxC, CIFAR ResNet-18 without BatchNorm, 11.2M parameters).
    #[arg(long, short = 'a', default_value = "digits-cnn", value_parser = PossibleValuesParser::new(zoo::NAMES))]
    pub arch: String,
    /// Dataset whose training split fits the head: digits, mnist or fashion-mnist.
    #[arg(long, short = 'd', default_value = "digits", value_name = "DATA")]
    pub data: String,
    /// Seed of the random (He-uniform) weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ridge strength relative to the mean feature energy: λ = R · trace(XᵀX) / d.
    #[arg(long, default_value_t = 1e-2, value_name = "R")]
    pub ridge: f64,
    /// Fit the head on only the first N training images.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Output model file (.lmm).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Serialize)]
struct SplitJson {
    samples: usize,
    correct: usize,
    accuracy: f64,
    loss: f64,
}

impl From<&Score> for SplitJson {
    fn from(s: &Score) -> Self {
        SplitJson {
            samples: s.total,
            correct: s.correct,
            accuracy: s.accuracy(),
            loss: s.loss(),
        }
    }
}

#[derive(Debug, Serialize)]
struct NewJson {
    output: String,
    arch: String,
    dataset: String,
    seed: u64,
    params: usize,
    head_samples: usize,
    lambda: f64,
    temperature: f64,
    train: SplitJson,
    test: SplitJson,
}

/// `lastmile new`.
pub fn run(args: &NewArgs, ui: Ui) -> Result<()> {
    if !(args.ridge.is_finite() && args.ridge > 0.0) {
        bail!("--ridge must be a positive number, got {}", args.ridge);
    }
    util::check_output(&args.output, ui)?;
    let train = open_dataset(&args.data, Split::Train)?;
    let test = open_dataset(&args.data, Split::Test)?;
    let shape = [train.height, train.width, train.channels];
    let (topology, specs) =
        zoo::by_name(&args.arch, Some(&shape), train.num_classes).ok_or_else(|| {
            match zoo::fixed_input_shape(&args.arch) {
                Some(fixed) => anyhow!(
                    "--arch {} takes {}x{}x{} images but dataset '{}' has {}x{}x{}",
                    args.arch,
                    fixed[0],
                    fixed[1],
                    fixed[2],
                    args.data,
                    shape[0],
                    shape[1],
                    shape[2]
                ),
                None => anyhow!(
                    "--arch {} cannot be built for dataset '{}' ({}x{}x{}, {} classes)",
                    args.arch,
                    args.data,
                    shape[0],
                    shape[1],
                    shape[2],
                    train.num_classes
                ),
            }
        })?;
    let mut model = zoo::init_float(topology, specs, args.seed);

    // The head: the last node, a linear layer without activation.
    let last = model
        .topology
        .nodes
        .last()
        .context("architecture has no nodes")?;
    let Op::Linear(head) = &last.op else {
        bail!(
            "architecture '{}' does not end in a linear layer",
            args.arch
        );
    };
    if head.activation != lastmile_core::Activation::None {
        bail!(
            "architecture '{}' has an activation on its final linear layer",
            args.arch
        );
    }
    let (w_id, b_id) = (head.weight, head.bias);
    let feat_value: ValueId = last.inputs[0];
    let d = model.params[w_id.index()].spec.shape[1];
    let classes = train.num_classes;

    // Penultimate features over the training split.
    let indices = first_indices(&train, args.limit);
    let n = indices.len();
    let bar = progress(ui, n, "features");
    let mut features: Vec<f32> = Vec::with_capacity(n * d);
    for chunk in indices.chunks(256) {
        let x = images_f32(&train, chunk);
        float_exec::forward_observed(&model, &x, chunk.len(), &mut |v, data| {
            if v == feat_value {
                features.extend_from_slice(data);
            }
        })
        .map_err(|e| anyhow!("float forward failed: {e}"))?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if features.len() != n * d {
        bail!(
            "internal: collected {} feature values, expected {n} × {d}",
            features.len()
        );
    }
    let labels: Vec<usize> = indices
        .iter()
        .map(|&i| usize::from(train.labels[i]))
        .collect();

    let mut ne = NormalEquations::new(d, classes);
    for (row, &y) in features.chunks_exact(d).zip(&labels) {
        ne.add(row, y);
    }
    let mut fitted = ne
        .solve(args.ridge)
        .context("cannot fit the ridge-regression head")?;
    let mut logits = vec![0f32; n * classes];
    for (row, out) in features
        .chunks_exact(d)
        .zip(logits.chunks_exact_mut(classes))
    {
        fitted.logits(row, out);
    }
    let t = fit_temperature(&logits, &labels, classes);
    fitted.apply_temperature(t);
    if b_id.is_none() {
        bail!(
            "architecture '{}' has no bias on its final linear layer",
            args.arch
        );
    }
    model.params[w_id.index()].data = fitted.weight.clone();
    if let Some(b) = b_id {
        model.params[b.index()].data = fitted.bias.clone();
    }
    model
        .validate()
        .map_err(|e| anyhow!("the fitted model is invalid: {e}"))?;

    let md = &mut model.metadata;
    md.insert("name".into(), format!("{}-{}", args.arch, args.data));
    md.insert("arch".into(), args.arch.clone());
    md.insert("dataset".into(), args.data.clone());
    md.insert("class_names".into(), train.class_names.join(","));
    md.insert("seed".into(), args.seed.to_string());
    md.insert(
        "provenance".into(),
        format!(
            "random conv features (seed {}) + ridge-regression head; not backprop-pretrained",
            args.seed
        ),
    );
    md.insert(
        "head".into(),
        format!(
            "ridge regression on {n} {} images, lambda {:.4e} ({} x trace/d), temperature {:.4}",
            train.name, fitted.lambda, args.ridge, fitted.temperature
        ),
    );

    let train_all = first_indices(&train, None);
    let test_all = first_indices(&test, None);
    let s_train = eval_float(&model, &train, &train_all, 256, ui, "train")?;
    let s_test = eval_float(&model, &test, &test_all, 256, ui, "test")?;
    util::save_float_model(&args.output, &model)?;

    let params: usize = model.params.iter().map(|p| p.spec.numel()).sum();
    if ui.json {
        let j = NewJson {
            output: args.output.display().to_string(),
            arch: args.arch.clone(),
            dataset: args.data.clone(),
            seed: args.seed,
            params,
            head_samples: n,
            lambda: fitted.lambda,
            temperature: fitted.temperature,
            train: (&s_train).into(),
            test: (&s_test).into(),
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "{} for {} ({} classes): {params} parameters; head fitted by ridge regression on {n} training images (lambda {:.3e}, temperature {:.3})",
            args.arch, args.data, classes, fitted.lambda, fitted.temperature
        );
        println!("float train {}", s_train.summary());
        println!("float test  {}", s_test.summary());
        println!("wrote {}", args.output.display());
    }
    Ok(())
}
