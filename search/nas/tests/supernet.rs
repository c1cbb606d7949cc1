//! The supernet against its exported weights, checkpoints, and the split-aware initialization.

use burn::prelude::*;
use splitnets_nas::Rng;
use splitnets_nas::data::Batch;
use splitnets_nas::reference;
use splitnets_nas::space::{Arch, Form, Fusion, NO_REDUCE, SearchSpace};
use splitnets_nas::supernet::{BnMode, Ctx, InitScheme, Supernet};
use splitnets_nas::train::calibrate;

fn tiny_space() -> SearchSpace {
    let mut s = SearchSpace::standard(16, 3, 5);
    s.stem_widths = vec![4, 6];
    for st in &mut s.stages {
        st.widths = st.widths.iter().map(|w| w / 4).collect();
    }
    s.reduce_channels = vec![2, 4];
    s
}

fn random_batch(space: &SearchSpace, n: usize, rng: &mut Rng) -> Batch {
    let px = space.input_size * space.input_size;
    Batch {
        inputs: (0..n * space.views * px)
            .map(|_| rng.normal() as f32)
            .collect(),
        labels: (0..n).map(|i| (i % space.classes) as i64).collect(),
        view_mask: vec![1.0; n * space.views],
        batch: n,
    }
}

fn logits(net: &Supernet, space: &SearchSpace, arch: &Arch, b: &Batch, mode: BnMode) -> Vec<f32> {
    let d = Device::flex();
    let s = space.input_size;
    let x = Tensor::<5>::from_data(
        TensorData::new(b.inputs.clone(), [b.batch, space.views, 1, s, s]),
        &d,
    );
    let m = Tensor::<2>::from_data(
        TensorData::new(b.view_mask.clone(), [b.batch, space.views]),
        &d,
    );
    let mut ctx = Ctx::new(mode);
    net.forward(space, arch, x, m, &mut ctx)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn exported_weights_reproduce_the_supernet_subnet() {
    let space = tiny_space();
    let d = Device::flex();
    let net = Supernet::new(&space, InitScheme::SplitAware, 7, &d);
    let mut rng = Rng::new(1);
    let calib: Vec<Batch> = (0..3).map(|_| random_batch(&space, 8, &mut rng)).collect();
    // Every fusion at a split after a stage and after the classifier.
    let last = space.stages.len();
    let cases = Fusion::ALL
        .into_iter()
        .enumerate()
        .map(|(k, f)| (1 + k % last, f))
        .chain(Fusion::ALL.into_iter().map(|f| (last + 1, f)));
    for (split, fusion) in cases {
        let mut arch = Arch::random(&space, &mut rng);
        arch.fusion = fusion;
        arch.bits = 8;
        arch.split = split;
        arch.c_red = if split > last {
            NO_REDUCE
        } else {
            space.reduce_channels[0]
        };
        assert!(arch.is_in(&space), "{}", arch.short());
        let stats = calibrate(&net, &space, &arch, &calib, &d);
        let mut b = random_batch(&space, 3, &mut rng);
        // Item 1 misses its first camera, item 2 its last: the masked fusion in burn must
        // equal the reference's fusion of the views present.
        b.view_mask[space.views] = 0.0;
        b.view_mask[3 * space.views - 1] = 0.0;
        let got = logits(&net, &space, &arch, &b, BnMode::Use(stats.clone()));
        let w = net.export(&space, &arch, &stats);
        let px = space.input_size * space.input_size;
        for i in 0..b.batch {
            let feats: Vec<_> = (0..space.views)
                .filter(|v| b.view_mask[i * space.views + v] > 0.0)
                .map(|v| {
                    let at = (i * space.views + v) * px;
                    reference::head(&w, &b.inputs[at..at + px], space.input_size)
                })
                .collect();
            let want = reference::tail(&w, &feats);
            for (c, (g, r)) in got[i * space.classes..(i + 1) * space.classes]
                .iter()
                .zip(&want)
                .enumerate()
            {
                assert!(
                    (g - r).abs() < 2e-3 * (1.0 + r.abs()),
                    "{} item {i} class {c}: burn {g} vs reference {r}",
                    arch.short()
                );
            }
        }
    }
}

#[test]
fn parameters_round_trip_through_a_checkpoint() {
    let space = tiny_space();
    let d = Device::flex();
    let net = Supernet::new(&space, InitScheme::SplitAware, 3, &d);
    let params = net.parameters();
    let back = Supernet::from_parameters(&space, params.clone(), &d).unwrap();
    assert_eq!(back.parameters(), params);
    let arch = Arch::largest(&space, 2);
    let mut rng = Rng::new(2);
    let b = random_batch(&space, 4, &mut rng);
    assert_eq!(
        logits(&net, &space, &arch, &b, BnMode::Batch),
        logits(&back, &space, &arch, &b, BnMode::Batch)
    );
    let mut short = params;
    short.pop();
    assert!(Supernet::from_parameters(&space, short, &d).is_err());
}

#[test]
fn split_aware_init_makes_recover_after_reduce_a_projection() {
    let space = tiny_space();
    let d = Device::flex();
    let net = Supernet::new(&space, InitScheme::SplitAware, 5, &d);
    let p = net.parameters();
    // Layout: stem(3) + blocks(9 each) + per split module 6 arrays (reduce_w first).
    let blocks: usize = space.stages.iter().map(|s| s.max_depth()).sum();
    let at = 3 + 9 * blocks;
    let c = space.stages[0].max_width();
    let r = space.max_reduce();
    let (rw, vw) = (&p[at], &p[at + 2]);
    // reduce · reduceᵀ = I (rows orthonormal) and recover = reduceᵀ.
    for i in 0..r {
        for j in 0..r {
            let dot: f32 = (0..c).map(|k| rw[i * c + k] * rw[j * c + k]).sum();
            assert!((dot - f32::from(u8::from(i == j))).abs() < 1e-4);
        }
        for k in 0..c {
            assert!((vw[k * r + i] - rw[i * c + k]).abs() < 1e-7);
        }
    }
}

fn logits_form(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    form: Form,
    b: &Batch,
    mask: &[f32],
) -> Vec<f32> {
    let d = Device::flex();
    let s = space.input_size;
    let x = Tensor::<5>::from_data(
        TensorData::new(b.inputs.clone(), [b.batch, space.views, 1, s, s]),
        &d,
    );
    let m = Tensor::<2>::from_data(TensorData::new(mask.to_vec(), [b.batch, space.views]), &d);
    let mut ctx = Ctx::new(BnMode::Batch);
    net.forward_form(space, arch, form, x, m, &mut ctx)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn baseline_forms_fuse_where_their_placement_does() {
    let space = tiny_space();
    let d = Device::flex();
    let net = Supernet::new(&space, InitScheme::SplitAware, 3, &d);
    let mut rng = Rng::new(5);
    let b = random_batch(&space, 4, &mut rng);
    let arch = Arch::largest(&space, space.stages.len());
    let all = vec![1.0; 4 * space.views];
    // Late fusion: the logits with every view present are the mean of each view's logits
    // alone (BatchNorm statistics are per batch, so each view alone sees the same batch).
    let fused = logits_form(&net, &space, &arch, Form::LateFusion, &b, &all);
    let mut mean = vec![0.0f32; fused.len()];
    for v in 0..space.views {
        let only: Vec<f32> = (0..4 * space.views)
            .map(|i| f32::from(u8::from(i % space.views == v)))
            .collect();
        let l = logits_form(&net, &space, &arch, Form::LateFusion, &b, &only);
        for (m, x) in mean.iter_mut().zip(l) {
            *m += x / space.views as f32;
        }
    }
    let diff = fused
        .iter()
        .zip(&mean)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-4,
        "late fusion is not the mean of the views: {diff}"
    );
    // A planner cut quantizes the feature to 8 bits: close to the uncut network, not equal.
    let whole = logits_form(
        &net,
        &space,
        &arch,
        Form::Whole { cut_after: None },
        &b,
        &all,
    );
    let cut = logits_form(
        &net,
        &space,
        &arch,
        Form::Whole { cut_after: Some(2) },
        &b,
        &all,
    );
    let scale = whole.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let err = whole
        .iter()
        .zip(&cut)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        err > 0.0 && err < 0.05 * scale.max(1e-3),
        "cut error {err} of {scale}"
    );
    // The split form through forward_form is forward.
    let split = Arch::largest(&space, 2);
    let a = logits_form(&net, &space, &split, Form::Split, &b, &all);
    let f = logits(&net, &space, &split, &b, BnMode::Batch);
    assert_eq!(a, f);
}
