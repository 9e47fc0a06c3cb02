//! Rate–distortion encoding (`CodecBuilder::rate_distortion`) on the CPU backend.

mod common;

use common::{pattern, tiny_weights};
use hvq_codec::{
    Backend, Codec, CodecError, LevelSelection, RgbImage, Tiling, has_default_model, inspect,
};

fn codec(lambda: f64, tiling: Tiling) -> Result<Codec, CodecError> {
    Codec::builder(tiny_weights(1))
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

#[test]
fn a_negligible_weight_keeps_the_quantizer_tokens_whole_and_in_tiles() {
    let img = pattern(96, 64);
    for tiling in [Tiling::default(), TILED] {
        let plain = codec(0.0, tiling).unwrap();
        // Some weight, but far too small to outweigh any distance between entries of random weights:
        // the candidates' first entries, pasted tile by tile like the tokens.
        let rd = codec(1e-12, tiling).unwrap();
        for levels in [LevelSelection::All, LevelSelection::from(&[0usize][..])] {
            assert_eq!(
                rd.encode(&img, levels.clone()).unwrap(),
                plain.encode(&img, levels).unwrap(),
                "{tiling:?}"
            );
        }
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

#[test]
fn the_default_model_writes_smaller_files_that_every_reader_decodes() {
    if !has_default_model() {
        eprintln!("skipped: this build embeds no default model");
        return;
    }
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
