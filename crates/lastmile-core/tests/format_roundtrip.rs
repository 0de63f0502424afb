//! Model files round-trip bit-identically, are readable by the reference safetensors reader,
//! and are saved atomically.

#[path = "format_common.rs"]
mod common;

use std::fs;

use common::{Lcg, Parts, float_model, quant_model, temp_dir};
use lastmile_core::format::{self, AnyModel, FILE_EXTENSION, FORMAT_VERSION, ModelKind, keys};
use lastmile_core::model::FloatModel;
use lastmile_core::{ActQuant, QData, QuantModel, WeightBits};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

fn scale_bits(m: &QuantModel) -> Vec<Vec<u32>> {
    m.params
        .iter()
        .map(|p| p.scales.iter().map(|s| s.to_bits()).collect())
        .collect()
}

fn act_bits(m: &QuantModel) -> Vec<(u32, i32)> {
    m.act
        .iter()
        .map(|q| (q.scale.to_bits(), q.zero_point))
        .collect()
}

fn check_quant_round_trip(m: &QuantModel) {
    let bytes = format::quant_to_bytes(m).unwrap();
    let back = format::quant_from_bytes(&bytes).unwrap();
    assert_eq!(&back, m);
    assert_eq!(
        scale_bits(&back),
        scale_bits(m),
        "weight scales must keep their exact bits"
    );
    assert_eq!(
        act_bits(&back),
        act_bits(m),
        "activation scales must keep their exact bits"
    );
    assert_eq!(
        format::quant_to_bytes(&back).unwrap(),
        bytes,
        "re-encoding must give identical bytes"
    );
    assert_eq!(
        format::from_bytes(&bytes).unwrap(),
        AnyModel::Quantized(m.clone())
    );
}

#[test]
fn quantized_8w8a_round_trips_bit_identically() {
    let m = quant_model(WeightBits::W8);
    assert!(matches!(m.params[0].data, QData::I8(_)));
    assert!(
        m.params.iter().any(|p| p.spec.trainable) && m.params.iter().any(|p| !p.spec.trainable)
    );
    check_quant_round_trip(&m);
}

#[test]
fn quantized_16w8a_round_trips_bit_identically() {
    let m = quant_model(WeightBits::W16);
    assert!(matches!(m.params[0].data, QData::I16(_)));
    check_quant_round_trip(&m);
}

#[test]
fn float_round_trips_bit_identically() {
    let mut m = float_model();
    m.params[0].data[0] = -0.0; // PartialEq would not notice a lost sign of zero; the bit check does
    m.params[2].data[5] = f32::from_bits(1); // smallest subnormal
    m.params[2].data[6] = f32::MAX;
    let bytes = format::float_to_bytes(&m).unwrap();
    let back = format::float_from_bytes(&bytes).unwrap();
    assert_eq!(back, m);
    let bits = |m: &FloatModel| {
        m.params
            .iter()
            .flat_map(|p| p.data.iter().map(|v| v.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&back), bits(&m));
    assert_eq!(format::float_to_bytes(&back).unwrap(), bytes);
    assert_eq!(format::from_bytes(&bytes).unwrap().kind(), ModelKind::Float);
}

#[test]
fn awkward_activation_scales_keep_their_bits() {
    // The act scales live in JSON; random f32 bit patterns must survive the decimal round trip.
    let base = quant_model(WeightBits::W8);
    let mut rng = Lcg(99);
    let mut seen = 0;
    for _ in 0..300 {
        let mut m = base.clone();
        // Random bits in [2^-10, 2^-3): keeps every requantization multiplier representable.
        let mut random_scale = || f32::from_bits(((127 - 10) << 23) + rng.below(7 << 23) as u32);
        let (s0, s1, s4) = (random_scale(), random_scale(), random_scale());
        m.act[0] = ActQuant {
            scale: s0,
            zero_point: rng.below(256) as i32 - 128,
        };
        m.act[1] = ActQuant {
            scale: s1,
            zero_point: -128,
        };
        m.act[2] = m.act[1]; // pool and flatten do not requantize
        m.act[3] = m.act[1];
        m.act[4] = ActQuant {
            scale: s4,
            zero_point: rng.below(256) as i32 - 128,
        };
        if m.validate().is_err() {
            continue;
        }
        seen += 1;
        let back = format::quant_from_bytes(&format::quant_to_bytes(&m).unwrap()).unwrap();
        assert_eq!(act_bits(&back), act_bits(&m));
    }
    assert!(seen > 250, "only {seen} random models were valid");
}

#[test]
fn encoding_is_deterministic() {
    let m = quant_model(WeightBits::W8);
    let a = format::quant_to_bytes(&m).unwrap();
    let b = format::quant_to_bytes(&m.clone()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn files_are_standard_safetensors() {
    let m = quant_model(WeightBits::W8);
    let bytes = format::quant_to_bytes(&m).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to 8 bytes so tensors stay aligned");
    let st = SafeTensors::deserialize(&bytes).expect("the reference reader accepts the file");
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "conv1.bias",
            "conv1.weight",
            "conv1.weight.__scales",
            "fc.bias",
            "fc.weight",
            "fc.weight.__scales"
        ]
    );
    let w = st.tensor("conv1.weight").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::I8, &[4usize, 3, 3, 1][..]));
    let QData::I8(codes) = &m.params[0].data else {
        unreachable!()
    };
    assert_eq!(w.data(), codes.iter().map(|&c| c as u8).collect::<Vec<_>>());
    assert_eq!(st.tensor("fc.bias").unwrap().dtype(), Dtype::I32);
    let s = st.tensor("fc.weight.__scales").unwrap();
    assert_eq!((s.dtype(), s.shape()), (Dtype::F32, &[10usize][..]));
    let scales: Vec<f32> = s
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(scales, m.params[2].scales);
    // Every tensor starts at a multiple of its element size.
    let (_, md) = SafeTensors::read_metadata(&bytes).unwrap();
    for (name, info) in md.tensors() {
        let size = info.dtype.bitsize() / 8;
        assert_eq!(
            (8 + n + info.data_offsets.0) % size,
            0,
            "{name} is misaligned"
        );
    }

    let parts = Parts::parse(&bytes);
    assert_eq!(parts.meta[keys::FORMAT], "lastmile-model");
    assert_eq!(parts.meta[keys::FORMAT_VERSION], FORMAT_VERSION.to_string());
    assert_eq!(parts.meta[keys::KIND], "quantized");
    assert_eq!(parts.meta[keys::CRC32].len(), 8);
    let g = parts.graph();
    assert_eq!(g["weight_bits"], "w8");
    assert_eq!(g["params"][2]["name"], "fc.weight");
    assert_eq!(g["params"][2]["trainable"], true);
    assert_eq!(g["act"].as_array().unwrap().len(), 5);
    let meta: serde_json::Value = serde_json::from_str(&parts.meta[keys::METADATA]).unwrap();
    assert_eq!(meta["name"], "tiny-cnn");

    let float = Parts::parse(&format::float_to_bytes(&float_model()).unwrap());
    assert_eq!(float.meta[keys::KIND], "float");
    assert!(float.tensors.values().all(|t| t.dtype == Dtype::F32));
    assert!(
        !float
            .tensors
            .keys()
            .any(|k| k.ends_with(format::SCALES_SUFFIX))
    );
    assert!(float.graph().get("act").is_none() && float.graph().get("weight_bits").is_none());
}

#[test]
fn reading_the_wrong_kind_says_so() {
    let q = format::quant_to_bytes(&quant_model(WeightBits::W8)).unwrap();
    let f = format::float_to_bytes(&float_model()).unwrap();
    let e = format::quant_from_bytes(&f).unwrap_err();
    assert_eq!(e.field, "__metadata__.\"lastmile.kind\"");
    assert!(e.message.contains("holds a float model"), "{e}");
    let e = format::float_from_bytes(&q).unwrap_err();
    assert!(e.message.contains("holds a quantized model"), "{e}");
}

#[test]
fn invalid_models_are_never_written() {
    let mut m = quant_model(WeightBits::W8);
    m.params[0].data = QData::I8(vec![-128; m.params[0].spec.numel()]);
    let e = format::quant_to_bytes(&m).unwrap_err();
    assert_eq!(e.field, "tensor 'conv1.weight'");
    assert!(e.message.contains("symmetric range"), "{e}");

    let mut m = quant_model(WeightBits::W8);
    m.params[3].spec.name = "fc.weight".into();
    assert!(format::quant_to_bytes(&m).is_err());

    let mut f = float_model();
    f.params[1].data[0] = f32::NAN;
    let e = format::float_to_bytes(&f).unwrap_err();
    assert!(e.to_string().contains("tensor 'conv1.bias'"), "{e}");
}

#[test]
fn save_and_load_each_kind() {
    let dir = temp_dir("save-load");
    let q8 = quant_model(WeightBits::W8);
    let q16 = quant_model(WeightBits::W16);
    let fm = float_model();
    let p8 = dir.join(format!("q8.{FILE_EXTENSION}"));
    let p16 = dir.join(format!("q16.{FILE_EXTENSION}"));
    let pf = dir.join(format!("float.{FILE_EXTENSION}"));
    format::save_quant(&p8, &q8).unwrap();
    format::save_quant(&p16, &q16).unwrap();
    format::save_float(&pf, &fm).unwrap();

    assert_eq!(format::load_quant(&p8).unwrap(), q8);
    assert_eq!(format::load_quant(&p16).unwrap(), q16);
    assert_eq!(format::load_float(&pf).unwrap(), fm);
    assert_eq!(
        format::load(&p16).unwrap(),
        AnyModel::Quantized(q16.clone())
    );
    assert_eq!(format::load(&pf).unwrap(), AnyModel::Float(fm.clone()));
    assert_eq!(fs::read(&p8).unwrap(), format::quant_to_bytes(&q8).unwrap());

    let e = format::load_float(&p8).unwrap_err();
    assert_eq!(e.file.as_deref(), Some(p8.display().to_string().as_str()));
    assert!(
        e.to_string().contains("q8.lmm") && e.to_string().contains("lastmile.kind"),
        "{e}"
    );

    let missing = dir.join("nope.lmm");
    let e = format::load(&missing).unwrap_err();
    assert!(e.to_string().contains("nope.lmm"), "{e}");

    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_saves_never_destroy_existing_files() {
    let dir = temp_dir("atomic-fail");
    let m = quant_model(WeightBits::W8);
    let good = dir.join("good.lmm");
    format::save_quant(&good, &m).unwrap();
    let before = fs::read(&good).unwrap();

    // A directory that does not exist.
    let bad = dir.join("no-such-dir").join("model.lmm");
    let e = format::save_quant(&bad, &m).unwrap_err();
    assert!(e.to_string().contains("model.lmm"), "{e}");
    assert!(!bad.exists());
    assert_eq!(fs::read(&good).unwrap(), before);

    // An invalid model over an existing file: refused before the disk is touched.
    let mut broken = m.clone();
    broken.act[1].zero_point = 300;
    let e = format::save_quant(&good, &broken).unwrap_err();
    assert!(
        e.to_string().contains("good.lmm") && e.to_string().contains("graph.act[1]"),
        "{e}"
    );
    assert_eq!(fs::read(&good).unwrap(), before);

    // The rename fails (the target is a directory): the temporary file is cleaned up.
    let target_dir = dir.join("adir.lmm");
    fs::create_dir(&target_dir).unwrap();
    assert!(format::save_float(&target_dir, &float_model()).is_err());
    assert!(target_dir.is_dir());

    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".tmp-")),
        "temporary files left behind: {names:?}"
    );
    assert_eq!(format::load_quant(&good).unwrap(), m);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_over_an_existing_file_replaces_it_completely() {
    let dir = temp_dir("atomic-replace");
    let path = dir.join("model.lmm");
    fs::write(&path, vec![0xAB; 1 << 20]).unwrap(); // longer than any model here
    let q = quant_model(WeightBits::W16);
    format::save_quant(&path, &q).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        format::quant_to_bytes(&q).unwrap()
    );
    assert_eq!(format::load_quant(&path).unwrap(), q);

    // Replace a quantized model by a float one, then by a smaller quantized one.
    let f = float_model();
    format::save_float(&path, &f).unwrap();
    assert_eq!(format::load(&path).unwrap(), AnyModel::Float(f));
    let q8 = quant_model(WeightBits::W8);
    format::save_quant(&path, &q8).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        format::quant_to_bytes(&q8).unwrap()
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    fs::remove_dir_all(&dir).unwrap();
}

/// Guards the corruption tests: the helpers that take files apart must agree with the writer.
#[test]
fn test_helpers_take_files_apart_losslessly() {
    for bytes in [
        format::quant_to_bytes(&quant_model(WeightBits::W8)).unwrap(),
        format::float_to_bytes(&float_model()).unwrap(),
    ] {
        let mut parts = Parts::parse(&bytes);
        let crc = parts.meta[keys::CRC32].clone();
        parts.fix_crc();
        assert_eq!(
            parts.meta[keys::CRC32],
            crc,
            "the test's CRC rule must match the writer's"
        );
        let again = parts.to_bytes();
        assert_eq!(
            format::from_bytes(&again).unwrap(),
            format::from_bytes(&bytes).unwrap()
        );
    }
}
