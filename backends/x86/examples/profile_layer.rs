//! Runs one benchmark layer in a loop, for `perf record`:
//! `cargo run --release -p lastmile-backend-x86 --example profile_layer -- <tier> <8|16> <conv|conv14|conv1|linear|dw|resnet> [iters] [batch]`
use lastmile_backend_x86::{Tier, X86};
use lastmile_core::backend::Backend;
use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::quant::{Activation, WeightBits};
use lastmile_core::{ptq, zoo};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tier = Tier::parse(&args[1]).expect("tier");
    let bits = WeightBits::parse(&args[2]).expect("bits");
    let what = args[3].as_str();
    let iters: usize = args.get(4).map_or(2000, |s| s.parse().unwrap());
    let (topology, specs, n) = match what {
        "resnet" => {
            let (t, s) = zoo::resnet_tiny(32, 3, 10);
            (t, s, 8)
        }
        _ => {
            let mut b = TopologyBuilder::new(match what {
                "conv" => &[56, 56, 64][..],
                "conv14" => &[14, 14, 256][..],
                "conv1" => &[28, 28, 128][..],
                "dw" => &[28, 28, 64][..],
                _ => &[1024][..],
            });
            match what {
                "conv1" => b.conv2d(
                    "c",
                    ValueId::INPUT,
                    128,
                    128,
                    [1, 1],
                    [1, 1],
                    [0; 4],
                    1,
                    Activation::Relu,
                ),
                "conv" => b.conv2d(
                    "c",
                    ValueId::INPUT,
                    64,
                    64,
                    [3, 3],
                    [1, 1],
                    [1; 4],
                    1,
                    Activation::Relu,
                ),
                "conv14" => b.conv2d(
                    "c",
                    ValueId::INPUT,
                    256,
                    256,
                    [3, 3],
                    [1, 1],
                    [1; 4],
                    1,
                    Activation::Relu,
                ),
                "dw" => b.conv2d(
                    "c",
                    ValueId::INPUT,
                    64,
                    64,
                    [3, 3],
                    [1, 1],
                    [1; 4],
                    64,
                    Activation::Relu,
                ),
                _ => b.linear("fc", ValueId::INPUT, 1024, 1024, Activation::None),
            };
            let (t, s) = b.finish();
            let batch = args.get(5).map(|s| s.parse().expect("batch"));
            (t, s, batch.unwrap_or(if what == "linear" { 8 } else { 1 }))
        }
    };
    let float = zoo::init_float(topology, specs, 1);
    let sample: usize = float.topology.input_shape.iter().product();
    let calib: Vec<f32> = (0..8 * sample)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let model = ptq::quantize(&float, &calib, 8, bits).unwrap().0;
    let input: Vec<i8> = (0..n * sample).map(|i| ((i * 31) % 251) as i8).collect();
    let b = X86::with_tier(tier).unwrap();
    let mut p = b.prepare(&model).unwrap();
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    for _ in 0..iters {
        p.forward(&model.params, &input, n, &mut out).unwrap();
    }
    println!("{:?} per forward", t.elapsed() / iters as u32);
}
