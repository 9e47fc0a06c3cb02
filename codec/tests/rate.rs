//! Rate–distortion encoding (`CodecBuilder::rate_distortion`) on the CPU backend.

mod common;

use std::collections::BTreeMap;

use common::{pattern, tiny_weights};
use hvq_codec::{Backend, Codec, CodecError, LevelSelection, Priors, Tiling, Tokens, Weights};
use hvq_spec::meta;

fn codec(lambda: f64, tiling: Tiling) -> Result<Codec, CodecError> {
    codec_with(tiny_weights(1), lambda, tiling)
}

fn codec_with(weights: Weights, lambda: f64, tiling: Tiling) -> Result<Codec, CodecError> {
    Codec::builder(weights)
        .backend(Backend::Cpu)
        .tiling(tiling)
        .rate_distortion(lambda)
        .build()
}

/// Tiles of 32 pixels with an 8-pixel halo (as in tests/tiling.rs): a 96×64 image runs in 6 tiles.
const TILED: Tiling = Tiling {
    whole_max_pixels: 0,
    tile: 32,
    overlap: 8,
};

/// The tiny weights with every decoder's first convolution replaced by a scaled identity on its
/// centre tap, so the rate–distortion distance (the energy of a move in that layer's outputs) is the
/// quantizer's plain squared distance.
fn isotropic_decoders(weights: Weights) -> Weights {
    let cfg = weights.config().clone();
    let mut tensors: BTreeMap<String, hvq_spec::Tensor> = weights
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for level in 0..cfg.levels {
        let w = tensors
            .get_mut(&format!("decoders.{level}.conv_in.weight"))
            .unwrap();
        let (d, taps) = (w.shape[1], w.shape[2] * w.shape[3]);
        w.data.iter_mut().for_each(|v| *v = 0.0);
        (0..d).for_each(|a| w.data[(a * d + a) * taps + taps / 2] = 0.5);
    }
    Weights::from_tensors(cfg, tensors.into_iter().collect(), BTreeMap::new()).unwrap()
}

#[test]
fn a_negligible_weight_keeps_the_quantizer_tokens_whole_and_in_tiles() {
    let img = pattern(96, 64);
    for tiling in [Tiling::default(), TILED] {
        let plain = codec(0.0, tiling).unwrap();
        // Some weight, but far too small to outweigh any distance between entries of random weights,
        // and decoders that see every move alike: the candidates' first entries, pasted tile by tile
        // like the tokens.
        let rd = codec_with(isotropic_decoders(tiny_weights(1)), 1e-12, tiling).unwrap();
        for levels in [LevelSelection::All, LevelSelection::from(&[0usize][..])] {
            assert_eq!(
                rd.encode(&img, levels.clone()).unwrap(),
                plain.encode(&img, levels).unwrap(),
                "{tiling:?}"
            );
        }
        // With the random decoders' own first layers, the same negligible weight takes at some
        // positions an entry that is nearer in their metric than the quantizer's.
        let metric = codec(1e-12, tiling).unwrap();
        let (a, b) = (
            metric.encode(&img, LevelSelection::All).unwrap(),
            plain.encode(&img, LevelSelection::All).unwrap(),
        );
        let differ: usize = a
            .grids
            .iter()
            .zip(&b.grids)
            .map(|(x, y)| {
                x.tokens
                    .iter()
                    .zip(&y.tokens)
                    .filter(|(s, t)| s != t)
                    .count()
            })
            .sum();
        assert!(differ > 0, "{tiling:?}: the decoder metric changed nothing");
    }
}

#[test]
fn bad_weights_are_refused_when_the_codec_is_built() {
    for lambda in [-0.1, f64::NAN, f64::INFINITY] {
        match codec(lambda, Tiling::default()) {
            Err(CodecError::RateWeight { lambda: got }) => {
                assert!(got.to_bits() == lambda.to_bits(), "{got} for {lambda}")
            }
            other => panic!("{lambda}: {other:?}"),
        }
    }
}

/// The embedded model is a committed file (`codec/models/default.safetensors`): with the feature on
/// it must be there, so its absence fails instead of skipping.
#[cfg(feature = "default-model")]
#[test]
fn the_default_model_writes_smaller_files_that_every_reader_decodes() {
    use hvq_codec::{RgbImage, has_default_model, inspect};
    assert!(
        has_default_model(),
        "the default-model feature is on but codec/models/default.safetensors was not embedded"
    );
    let img = pattern(128, 96);
    let build = |lambda: f64| {
        Codec::default_model()
            .unwrap()
            .backend(Backend::Cpu)
            .rate_distortion(lambda)
            .build()
            .unwrap()
    };
    let plain = build(0.0);
    let base = plain.encode_to_hvq(&img, LevelSelection::All).unwrap();
    let mut last = base.len();
    for lambda in [0.1, 1.0] {
        let bytes = build(lambda)
            .encode_to_hvq(&img, LevelSelection::All)
            .unwrap();
        assert!(
            bytes.len() < last,
            "lambda {lambda}: {} after {last} bytes",
            bytes.len()
        );
        last = bytes.len();
        // A reader without the option decodes it: the same header, levels and image size.
        let info = inspect(&bytes).unwrap();
        assert_eq!(info.levels.len(), 3);
        let out: RgbImage = plain.decode_hvq(&bytes, None).unwrap().image;
        assert_eq!((out.width(), out.height()), (128, 96));
    }
}

/// The tiny model with priors in which entry 3 is 1000 times as frequent as any other at every level:
/// a large weight then makes the positions whose 16 nearest entries hold 3 take it.
fn skewed_codec(lambda: f64, backend: Backend) -> Result<Codec, CodecError> {
    let w = tiny_weights(1);
    let cfg = w.config().clone();
    let mut counts = vec![vec![1u64; cfg.codebook_size]; cfg.levels];
    counts.iter_mut().for_each(|c| c[3] = 1000);
    let priors = Priors::from_counts(counts).unwrap();
    let tensors = w.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let metadata = BTreeMap::from([(meta::PRIORS.to_string(), priors.to_metadata_string())]);
    let weights = Weights::from_tensors(cfg, tensors, metadata).unwrap();
    Codec::builder(weights)
        .backend(backend)
        .rate_distortion(lambda)
        .build()
}

fn share_of_3(tokens: &Tokens) -> f64 {
    let all: Vec<u32> = tokens.grids.iter().flat_map(|g| g.tokens.clone()).collect();
    all.iter().filter(|&&t| t == 3).count() as f64 / all.len() as f64
}

#[test]
fn a_large_weight_follows_the_priors_in_single_and_batch_encodes() {
    let images = [pattern(40, 24), pattern(24, 16)];
    let plain = skewed_codec(0.0, Backend::Cpu).unwrap();
    let rd = skewed_codec(1e6, Backend::Cpu).unwrap();
    let before = share_of_3(&plain.encode(&images[0], LevelSelection::All).unwrap());
    let chosen = rd.encode(&images[0], LevelSelection::All).unwrap();
    let after = share_of_3(&chosen);
    // Measured: 0.003 → 0.349 (entry 3 is among the 16 nearest of only some positions).
    assert!(
        after > 0.25 && after > 10.0 * before,
        "entry 3: {before:.3} → {after:.3}"
    );
    // The batch entry points give each image what encode gives it.
    let batch = rd.encode_batch(&images, LevelSelection::All);
    assert_eq!(batch[0].as_ref().unwrap(), &chosen);
    assert_eq!(
        batch[1].as_ref().unwrap(),
        &rd.encode(&images[1], LevelSelection::All).unwrap()
    );
    // On wgpu too, whose batches otherwise run on the device and return tokens, not candidates.
    match skewed_codec(1e6, Backend::Wgpu) {
        Ok(gpu) => {
            let batch = gpu.encode_batch(&images, LevelSelection::All);
            let share = share_of_3(batch[0].as_ref().unwrap());
            assert!(
                (share - after).abs() < 0.02,
                "wgpu batch: entry 3 at {share:.3}, CPU {after:.3}"
            );
        }
        Err(e) => common::skip_without_adapter(
            "a_large_weight_follows_the_priors_in_single_and_batch_encodes",
            &e.to_string(),
        ),
    }
}
