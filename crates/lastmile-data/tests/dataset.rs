//! Dataset operations, the embedded digits, the pinned shuffle rule and `open`.

use lastmile_data::{DataError, Dataset, Split, digits, digits_split, open, open_in, permutation};
use proptest::prelude::*;

/// Pinned outputs of the shuffle rule (ChaCha8 seed_from_u64 + u64 Lemire + Fisher–Yates).
/// If one of these changes, every seeded experiment in the project changes: do not update them
/// casually.
#[test]
fn permutation_is_pinned() {
    assert_eq!(permutation(10, 42), vec![9, 7, 2, 5, 0, 1, 4, 3, 8, 6]);
    assert_eq!(permutation(10, 0), vec![6, 1, 8, 3, 2, 9, 0, 5, 4, 7]);
    assert_eq!(
        permutation(1000, 7)[..10],
        [526, 828, 245, 517, 31, 225, 833, 236, 586, 604]
    );
    assert_eq!(permutation(0, 1), Vec::<usize>::new());
    assert_eq!(permutation(1, 1), vec![0]);
}

#[test]
fn digits_embedded() {
    let d = digits();
    assert_eq!(d.name, "digits");
    assert_eq!(d.len(), 1797);
    assert_eq!(
        (d.height, d.width, d.channels, d.sample_len()),
        (8, 8, 1, 64)
    );
    assert_eq!(d.max_value, 16);
    assert_eq!(d.num_classes, 10);
    assert_eq!(
        d.class_names,
        (0..10).map(|c| c.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        d.class_counts(),
        vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    assert_eq!(d.labels[0], 0);
    assert_eq!(d.pixels.len(), 1797 * 64);
    assert_eq!(*d.pixels.iter().max().unwrap(), 16);
    // First row of the CSV.
    assert_eq!(&d.image(0)[..8], &[0, 0, 5, 13, 9, 1, 0, 0]);
    let mut x = vec![0.0; 64];
    d.image_f32(0, &mut x);
    assert_eq!(x[3], 13.0 / 16.0);
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn digits_split_is_fixed() {
    let train = digits_split(Split::Train);
    let test = digits_split(Split::Test);
    assert_eq!(
        (train.name.as_str(), test.name.as_str()),
        ("digits-train", "digits-test")
    );
    assert_eq!(train.len(), 1438);
    assert_eq!(test.len(), 359);
    assert_eq!(
        train.class_counts(),
        vec![142, 146, 142, 146, 145, 146, 145, 143, 139, 144]
    );
    assert_eq!(
        test.class_counts(),
        vec![36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    );
    // Pins which images were chosen, not just how many.
    assert_eq!(
        test.labels[..20],
        [1, 6, 2, 6, 5, 5, 4, 5, 1, 7, 8, 0, 3, 3, 4, 1, 5, 8, 2, 0]
    );
    // open("digits") is the same split.
    assert_eq!(open("digits", Split::Test).unwrap(), test);
}

fn toy(n: usize, classes: usize) -> Dataset {
    Dataset {
        name: "toy".into(),
        height: 1,
        width: 2,
        channels: 1,
        pixels: (0..2 * n).map(|i| (i % 200) as u8).collect(),
        max_value: 255,
        labels: (0..n).map(|i| (i % classes) as u8).collect(),
        num_classes: classes,
        class_names: (0..classes).map(|c| format!("c{c}")).collect(),
    }
}

#[test]
fn subset_and_shuffled() {
    let d = toy(10, 3);
    let s = d.subset(&[4, 4, 0]);
    assert_eq!(s.len(), 3);
    assert_eq!(s.pixels, vec![8, 9, 8, 9, 0, 1]);
    assert_eq!(s.labels, vec![1, 1, 0]);
    let sh = d.shuffled(42);
    let p = permutation(10, 42);
    for (k, &i) in p.iter().enumerate() {
        assert_eq!(sh.image(k), d.image(i));
        assert_eq!(sh.labels[k], d.labels[i]);
    }
    assert_eq!(d.subset(&[]).len(), 0);
    assert!(d.subset(&[]).is_empty());
}

#[test]
fn per_class_few_shot() {
    let d = digits();
    let k5 = d.per_class(5, 3).unwrap();
    assert_eq!(k5.len(), 50);
    assert_eq!(k5.class_counts(), vec![5; 10]);
    assert_eq!(k5, d.per_class(5, 3).unwrap());
    assert_ne!(k5, d.per_class(5, 4).unwrap());
    assert_eq!(d.per_class(0, 3).unwrap().len(), 0);
    match d.per_class(175, 0) {
        Err(DataError::NotEnoughExamples {
            class, have, want, ..
        }) => {
            assert_eq!((class, have, want), (8, 174, 175));
        }
        other => panic!("expected NotEnoughExamples, got {other:?}"),
    }
    let msg = d.per_class(175, 0).unwrap_err().to_string();
    assert_eq!(
        msg,
        "dataset digits: class 8 (8) has 174 examples, 175 requested"
    );
}

#[test]
fn batches_cover_everything() {
    let d = toy(10, 2);
    let b: Vec<Vec<usize>> = d.batches(4, None).collect();
    assert_eq!(b, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    assert_eq!(d.batches(4, None).len(), 3);
    assert_eq!(d.batches(5, None).len(), 2);
    let shuffled: Vec<usize> = d.batches(3, Some(42)).flatten().collect();
    assert_eq!(shuffled, permutation(10, 42));
    assert_eq!(toy(0, 2).batches(4, Some(1)).count(), 0);
}

#[test]
fn open_errors() {
    let e = open("cifar", Split::Train).unwrap_err().to_string();
    assert_eq!(
        e,
        "unknown dataset \"cifar\"; valid names: digits, mnist, fashion-mnist, \
         speech-synthetic-source, speech-synthetic-target"
    );
    let root = std::env::temp_dir().join(format!("lastmile-no-data-{}", std::process::id()));
    for name in ["mnist", "fashion-mnist"] {
        let e = open_in(&root, name, Split::Train).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{name}/train-images-idx3-ubyte")),
            "{e}"
        );
        assert!(e.contains("cargo xtask data"), "{e}");
    }
}

proptest! {
    #[test]
    fn permutation_is_a_permutation(n in 0usize..300, seed in any::<u64>()) {
        let p = permutation(n, seed);
        let mut s = p.clone();
        s.sort_unstable();
        prop_assert_eq!(s, (0..n).collect::<Vec<_>>());
        prop_assert_eq!(p, permutation(n, seed));
    }

    #[test]
    fn split_is_a_stratified_partition(n in 0usize..200, classes in 1usize..6, frac in 0.0f64..=1.0, seed in any::<u64>()) {
        let d = toy(n, classes);
        let (a, b) = d.split(frac, seed);
        prop_assert_eq!(a.len() + b.len(), n);
        let (ca, cb, cd) = (a.class_counts(), b.class_counts(), d.class_counts());
        for c in 0..classes {
            prop_assert_eq!(ca[c] + cb[c], cd[c]);
            prop_assert_eq!(ca[c], (cd[c] as f64 * frac).round() as usize);
        }
        // Together the parts hold exactly the original images (pixels encode the index).
        let mut all: Vec<Vec<u8>> = (0..a.len()).map(|i| a.image(i).to_vec())
            .chain((0..b.len()).map(|i| b.image(i).to_vec())).collect();
        let mut orig: Vec<Vec<u8>> = (0..n).map(|i| d.image(i).to_vec()).collect();
        all.sort();
        orig.sort();
        prop_assert_eq!(all, orig);
    }

    #[test]
    fn batches_partition_indices(n in 0usize..100, bs in 1usize..17, seed in proptest::option::of(any::<u64>())) {
        let d = toy(n, 3);
        let batches: Vec<Vec<usize>> = d.batches(bs, seed).collect();
        prop_assert_eq!(batches.len(), n.div_ceil(bs));
        for (i, b) in batches.iter().enumerate() {
            if i + 1 < batches.len() { prop_assert_eq!(b.len(), bs); }
            prop_assert!(!b.is_empty() && b.len() <= bs);
        }
        let mut all: Vec<usize> = batches.concat();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
    }
}
