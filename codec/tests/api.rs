//! The library facade on the CPU backend with tiny random weights.

mod common;

use std::collections::BTreeMap;

use common::{pattern, tiny_codec, tiny_weights};
use hvq_codec::{
    Backend, Codec, CodecError, LevelSelection, Limits, Priors, RgbImage, Tiling, TokenGrid,
    Tokens, inspect, inspect_with,
};
use hvq_spec::{ModelConfig, Weights, meta};

#[test]
fn hvq_file_round_trips_the_encoded_tokens() {
    let codec = tiny_codec(1);
    let tokens = codec.encode(&pattern(37, 29), LevelSelection::All).unwrap();
    let bytes = codec.tokens_to_hvq(&tokens).unwrap();
    let (back, truncated) = codec.read_hvq(&bytes).unwrap();
    assert!(!truncated);
    assert_eq!(back, tokens);
}

#[test]
fn encode_to_hvq_equals_encode_then_write() {
    let codec = tiny_codec(1);
    let img = pattern(24, 16);
    let tokens = codec.encode(&img, &[0, 1, 2]).unwrap();
    assert_eq!(
        codec.encode_to_hvq(&img, LevelSelection::All).unwrap(),
        codec.tokens_to_hvq(&tokens).unwrap()
    );
}

#[test]
fn every_level_decodes_to_the_original_size() {
    let codec = tiny_codec(1);
    let tokens = codec.encode(&pattern(37, 29), LevelSelection::All).unwrap();
    assert_eq!(tokens.levels(), vec![0, 1, 2]);
    for grid in &tokens.grids {
        let img = codec.decode(grid, 37, 29).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (37, 29),
            "level {}",
            grid.level
        );
    }
}

#[test]
fn grids_have_the_padded_size_over_each_stride() {
    let codec = tiny_codec(1);
    let tokens = codec.encode(&pattern(37, 29), LevelSelection::All).unwrap();
    // Padded to 40×32 (coarsest stride 8); strides 2, 4, 8.
    let dims: Vec<_> = tokens
        .grids
        .iter()
        .map(|g| (g.level, g.width, g.height))
        .collect();
    assert_eq!(dims, vec![(0, 20, 16), (1, 10, 8), (2, 5, 4)]);
}

#[test]
fn odd_sizes_encode_and_decode() {
    let codec = tiny_codec(1);
    for (w, h) in [(1, 1), (37, 29), (2, 9), (17, 1)] {
        let img = pattern(w, h);
        let file = codec.encode_to_hvq(&img, LevelSelection::All).unwrap();
        let out = codec.decode_hvq(&file, None).unwrap();
        assert_eq!(
            (out.image.width(), out.image.height(), out.level),
            (w, h, 0),
            "{w}×{h}"
        );
    }
}

#[test]
fn decoding_is_deterministic() {
    let codec = tiny_codec(1);
    let file = codec
        .encode_to_hvq(&pattern(20, 12), LevelSelection::All)
        .unwrap();
    assert_eq!(
        codec.decode_hvq(&file, Some(1)).unwrap(),
        codec.decode_hvq(&file, Some(1)).unwrap()
    );
}

#[test]
fn chosen_levels_only_are_encoded() {
    let codec = tiny_codec(1);
    let tokens = codec.encode(&pattern(16, 16), &[2, 0, 2]).unwrap();
    assert_eq!(tokens.levels(), vec![0, 2]);
    let file = codec.tokens_to_hvq(&tokens).unwrap();
    assert!(matches!(
        codec.decode_hvq(&file, Some(1)),
        Err(CodecError::LevelOutOfRange { level: 1, available }) if available == vec![0, 2]
    ));
}

#[test]
fn levels_outside_the_model_or_none_are_refused() {
    let codec = tiny_codec(1);
    let img = pattern(8, 8);
    assert!(matches!(
        codec.encode(&img, &[3]),
        Err(CodecError::LevelOutOfRange { level: 3, .. })
    ));
    assert!(matches!(
        codec.encode(&img, Vec::new()),
        Err(CodecError::NoLevelsSelected)
    ));
}

#[test]
fn empty_images_are_typed_errors() {
    assert!(matches!(
        RgbImage::new(0, 4, vec![]),
        Err(CodecError::EmptyImage {
            width: 0,
            height: 4
        })
    ));
    let codec = tiny_codec(1);
    let empty: RgbImage = image::RgbImage::new(0, 0).into();
    assert!(matches!(
        codec.encode(&empty, LevelSelection::All),
        Err(CodecError::EmptyImage { .. })
    ));
    let grid = TokenGrid {
        level: 0,
        height: 0,
        width: 0,
        tokens: vec![],
    };
    assert!(matches!(
        codec.decode(&grid, 0, 0),
        Err(CodecError::EmptyImage { .. })
    ));
}

#[test]
fn over_limit_images_are_refused_before_allocation() {
    let limits = Limits {
        max_pixels: 100,
        ..Limits::default()
    };
    let codec = Codec::builder(tiny_weights(1))
        .backend(Backend::Cpu)
        .limits(limits)
        .build()
        .unwrap();
    assert!(matches!(
        codec.encode(&pattern(11, 10), LevelSelection::All),
        Err(CodecError::ImageTooLarge {
            width: 11,
            height: 10,
            limit: 100
        })
    ));
    // An image file is refused from its header, before its pixels are decoded.
    let png = pattern(20, 20).encode_as(image::ImageFormat::Png).unwrap();
    assert!(matches!(
        RgbImage::decode(&png, &limits),
        Err(CodecError::ImageTooLarge { .. })
    ));
    // A decode target size is checked too.
    let grid = TokenGrid {
        level: 2,
        height: 2,
        width: 2,
        tokens: vec![0; 4],
    };
    assert!(matches!(
        codec.decode(&grid, 16, 16),
        Err(CodecError::ImageTooLarge { .. })
    ));
}

/// A `.hvq` file of `width × height` holding only level 2, all tokens 0 (small on disk).
fn coarse_only_file(codec: &Codec, width: u32, height: u32) -> Vec<u8> {
    let (w, h) = codec.grid_size(2, width, height);
    let grid = TokenGrid {
        level: 2,
        height: h,
        width: w,
        tokens: vec![0; w * h],
    };
    codec
        .tokens_to_hvq(&Tokens {
            width,
            height,
            grids: vec![grid],
        })
        .unwrap()
}

fn codec_with(limits: Limits) -> Codec {
    Codec::builder(tiny_weights(1))
        .backend(Backend::Cpu)
        .limits(limits)
        .build()
        .unwrap()
}

#[test]
fn the_codec_limits_govern_its_hvq_reader_too() {
    use hvq_format::{FormatError, LimitKind};
    // 9000 × 8000 is over the default 64 Mpx: refused by default, from the header, quoting the
    // default limit, by reading as by inspecting.
    let file = coarse_only_file(&tiny_codec(1), 9000, 8000);
    fn over_pixels<T>(r: Result<T, CodecError>, max: u64) -> bool {
        matches!(
            r,
            Err(CodecError::Format(FormatError::OverLimit {
                what: LimitKind::Pixels,
                limit,
                got: 72_000_000,
            })) if limit == max
        )
    }
    let default_max = Limits::default().max_pixels;
    assert!(over_pixels(tiny_codec(1).read_hvq(&file), default_max));
    assert!(over_pixels(tiny_codec(1).info(&file), default_max));
    assert!(over_pixels(inspect(&file), default_max));
    // A codec whose limit allows it reads it (header check included) and inspects it.
    let wide = Limits {
        max_pixels: 1 << 27,
        ..Limits::default()
    };
    let (tokens, truncated) = codec_with(wide).read_hvq(&file).unwrap();
    assert_eq!(
        (tokens.width, tokens.height, truncated),
        (9000, 8000, false)
    );
    assert_eq!(codec_with(wide).info(&file).unwrap().width, 9000);
    assert_eq!(inspect_with(&file, &wide).unwrap().height, 8000);
    // A lower limit on the same codec governs images and files alike.
    let narrow = Limits {
        max_pixels: 1000,
        ..Limits::default()
    };
    let small = coarse_only_file(&tiny_codec(1), 40, 24);
    assert!(codec_with(narrow).read_hvq(&small).is_ok());
    let file = coarse_only_file(&tiny_codec(1), 50, 30);
    assert!(matches!(
        codec_with(narrow).read_hvq(&file),
        Err(CodecError::Format(FormatError::OverLimit {
            what: LimitKind::Pixels,
            limit: 1000,
            got: 1500,
        }))
    ));
    assert!(matches!(
        codec_with(narrow).encode(&pattern(50, 30), LevelSelection::All),
        Err(CodecError::ImageTooLarge { limit: 1000, .. })
    ));
    // The token and byte limits reach the reader too.
    let few_tokens = Limits {
        max_tokens: 10,
        ..Limits::default()
    };
    assert!(matches!(
        codec_with(few_tokens).read_hvq(&small),
        Err(CodecError::Format(FormatError::OverLimit {
            what: LimitKind::Tokens,
            limit: 10,
            ..
        }))
    ));
    let few_bytes = Limits {
        max_file_bytes: small.len() as u64 - 1,
        ..Limits::default()
    };
    assert!(matches!(
        codec_with(few_bytes).read_hvq(&small),
        Err(CodecError::FileTooLarge { got, limit }) if got == limit + 1
    ));
}

#[test]
fn buffer_sizes_are_checked() {
    assert!(matches!(
        RgbImage::new(2, 2, vec![0; 11]),
        Err(CodecError::BufferSize {
            expected: 12,
            got: 11,
            ..
        })
    ));
    assert!(matches!(
        RgbImage::from_rgba8(2, 2, &[0; 12]),
        Err(CodecError::BufferSize { expected: 16, .. })
    ));
}

#[test]
fn rgba_and_image_crate_conversions_keep_pixels() {
    let img = pattern(5, 3);
    let rgba = img.to_rgba8();
    assert_eq!(RgbImage::from_rgba8(5, 3, &rgba).unwrap(), img);
    let via_image: RgbImage = image::DynamicImage::ImageRgb8(img.to_image()).into();
    assert_eq!(via_image, img);
    let png = img.encode_as(image::ImageFormat::Png).unwrap();
    assert_eq!(RgbImage::decode(&png, &Limits::default()).unwrap(), img);
}

#[test]
fn non_images_are_decode_errors() {
    assert!(matches!(
        RgbImage::decode(b"hello, not an image", &Limits::default()),
        Err(CodecError::ImageDecode(_))
    ));
}

#[test]
fn files_of_another_model_are_refused() {
    let file = tiny_codec(1)
        .encode_to_hvq(&pattern(16, 16), LevelSelection::All)
        .unwrap();
    let other = tiny_codec(2);
    assert!(matches!(
        other.decode_hvq(&file, None),
        Err(CodecError::FingerprintMismatch { .. })
    ));
    assert!(matches!(
        other.read_hvq(&file),
        Err(CodecError::FingerprintMismatch { .. })
    ));
}

#[test]
fn prefixes_on_chunk_boundaries_decode_their_finest_level() {
    let codec = tiny_codec(1);
    let file = codec
        .encode_to_hvq(&pattern(37, 29), LevelSelection::All)
        .unwrap();
    let info = inspect(&file).unwrap();
    assert_eq!(
        info.levels.iter().map(|l| l.level).collect::<Vec<_>>(),
        vec![2, 1, 0]
    );
    let mut end = file.len() - info.levels.iter().map(|l| l.bytes).sum::<usize>();
    for chunk in &info.levels {
        end += chunk.bytes;
        let out = codec.decode_hvq(&file[..end], None).unwrap();
        assert_eq!((out.level, out.truncated), (chunk.level, false));
        assert_eq!((out.image.width(), out.image.height()), (37, 29));
    }
}

#[test]
fn every_truncation_gives_a_level_or_a_clean_error() {
    let codec = tiny_codec(1);
    let file = codec
        .encode_to_hvq(&pattern(24, 24), LevelSelection::All)
        .unwrap();
    let info = inspect(&file).unwrap();
    // (end offset, level) of each chunk, coarsest first.
    let mut end = file.len() - info.levels.iter().map(|l| l.bytes).sum::<usize>();
    let ends: Vec<(usize, usize)> = info
        .levels
        .iter()
        .map(|l| {
            end += l.bytes;
            (end, l.level)
        })
        .collect();
    for cut in 0..file.len() {
        let complete = ends.iter().rev().find(|(e, _)| *e <= cut);
        match (codec.decode_hvq(&file[..cut], None), complete) {
            (Ok(out), Some(&(e, level))) => {
                assert_eq!((out.level, out.truncated), (level, e != cut), "cut {cut}")
            }
            (Err(CodecError::NoCompleteLevel { .. } | CodecError::Format(_)), None) => {}
            (other, _) => panic!("cut {cut}: unexpected {other:?}"),
        }
    }
}

#[test]
fn flipped_bits_are_detected() {
    let codec = tiny_codec(1);
    let file = codec
        .encode_to_hvq(&pattern(16, 16), LevelSelection::All)
        .unwrap();
    for at in (0..file.len()).step_by(7) {
        let mut bad = file.clone();
        bad[at] ^= 0x10;
        assert!(
            codec.decode_hvq(&bad, None).is_err(),
            "flip at byte {at} went unnoticed"
        );
    }
}

#[test]
fn unsupported_versions_are_reported_as_such() {
    let codec = tiny_codec(1);
    let mut file = codec
        .encode_to_hvq(&pattern(8, 8), LevelSelection::All)
        .unwrap();
    file[8] = 99; // the version byte (docs/format.md §2)
    assert!(matches!(
        codec.decode_hvq(&file, None),
        Err(CodecError::Format(
            hvq_codec::FormatError::UnsupportedVersion { got: 99, .. }
        ))
    ));
}

#[test]
fn grids_that_do_not_fit_are_refused() {
    let codec = tiny_codec(1);
    let wrong_size = TokenGrid {
        level: 2,
        height: 3,
        width: 3,
        tokens: vec![0; 9],
    };
    assert!(matches!(
        codec.decode(&wrong_size, 16, 16),
        Err(CodecError::GridMismatch {
            expected_width: 2,
            ..
        })
    ));
    let bad_token = TokenGrid {
        level: 2,
        height: 2,
        width: 2,
        tokens: vec![0, 1, 32, 0],
    };
    assert!(matches!(
        codec.decode(&bad_token, 16, 16),
        Err(CodecError::TokenOutOfRange {
            token: 32,
            index: 2,
            ..
        })
    ));
    let bad_level = TokenGrid {
        level: 3,
        height: 1,
        width: 1,
        tokens: vec![0],
    };
    assert!(matches!(
        codec.decode(&bad_level, 16, 16),
        Err(CodecError::LevelOutOfRange { level: 3, .. })
    ));
}

#[test]
fn batch_encoding_matches_single_encoding() {
    let codec = tiny_codec(1);
    let images = vec![pattern(9, 7), pattern(16, 16), pattern(1, 1)];
    let batch = codec.encode_batch(&images, LevelSelection::All);
    for (img, got) in images.iter().zip(batch) {
        assert_eq!(
            got.unwrap(),
            codec.encode(img, LevelSelection::All).unwrap()
        );
    }
}

#[test]
fn batch_encoding_reports_errors_per_image() {
    let codec = tiny_codec(1);
    let images = vec![pattern(4, 4), image::RgbImage::new(0, 3).into()];
    let out = codec.encode_batch(&images, LevelSelection::All);
    assert!(out[0].is_ok());
    assert!(matches!(out[1], Err(CodecError::EmptyImage { .. })));
}

fn with_metadata(key: &str, value: String) -> Weights {
    let w = tiny_weights(1);
    let tensors = w.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let metadata = BTreeMap::from([(key.to_string(), value)]);
    Weights::from_tensors(w.config().clone(), tensors, metadata).unwrap()
}

#[test]
fn priors_come_from_the_weights_metadata() {
    let cfg = ModelConfig::tiny();
    let mut counts = vec![vec![1u64; cfg.codebook_size]; cfg.levels];
    counts[0][3] = 500;
    let priors = Priors::from_counts(counts).unwrap();
    let weights = with_metadata(meta::PRIORS, priors.to_metadata_string());
    let codec = Codec::builder(weights)
        .backend(Backend::Cpu)
        .build()
        .unwrap();
    assert_eq!(codec.priors().hash(), priors.hash());
    let file = codec
        .encode_to_hvq(&pattern(12, 12), LevelSelection::All)
        .unwrap();
    assert_eq!(codec.decode_hvq(&file, None).unwrap().level, 0);
    // Without metadata the priors are uniform, so the same model's files are not interchangeable.
    let uniform = tiny_codec(1);
    assert_eq!(
        uniform.priors().hash(),
        Priors::uniform(cfg.levels, cfg.codebook_size)
            .unwrap()
            .hash()
    );
    assert!(uniform.decode_hvq(&file, None).is_err());
}

#[test]
fn malformed_priors_metadata_is_refused() {
    let weights = with_metadata(meta::PRIORS, "hvqp1:not base64!".into());
    assert!(matches!(
        Codec::builder(weights).backend(Backend::Cpu).build(),
        Err(CodecError::Priors(_))
    ));
}

#[test]
fn a_context_model_in_the_metadata_is_used_and_checked() {
    let cfg = ModelConfig::tiny();
    let n = cfg.codebook_size;
    let priors = Priors::uniform(cfg.levels, n).unwrap();
    // Neighbour lists of a 1-D codebook (entry t next to t ± 1), fitted on the model's own tokens.
    let m = 4.min(n);
    let lists: Vec<u32> = (0..n as i64)
        .flat_map(|c| {
            let mut all: Vec<i64> = (0..n as i64).collect();
            all.sort_by_key(|&e| ((e - c).abs(), e));
            all.into_iter().take(m).map(|e| e as u32)
        })
        .collect();
    let mut fitter = hvq_format::ContextFitter::new(n, m, lists, cfg.levels).unwrap();
    let tokens = tiny_codec(1)
        .encode(&pattern(40, 32), LevelSelection::All)
        .unwrap();
    let mut finest_first = tokens.grids.clone();
    finest_first.sort_by_key(|g| g.level);
    assert!(fitter.add_image(&finest_first));
    let context = fitter.finish(&priors).unwrap();
    let mut metadata = BTreeMap::from([
        (meta::PRIORS.to_string(), priors.to_metadata_string()),
        (meta::CONTEXT.to_string(), context.to_metadata_string()),
    ]);
    let w = tiny_weights(1);
    let tensors: std::collections::HashMap<_, _> =
        w.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let weights =
        Weights::from_tensors(w.config().clone(), tensors.clone(), metadata.clone()).unwrap();
    let codec = Codec::builder(weights)
        .backend(Backend::Cpu)
        .build()
        .unwrap();
    assert!(codec.priors().context().is_some());
    assert_ne!(codec.priors().hash(), priors.hash());
    let file = codec.tokens_to_hvq(&tokens).unwrap();
    assert_eq!(codec.read_hvq(&file).unwrap().0, tokens);
    // The same weights without the context model cannot read the file: refused, not mis-decoded.
    let plain = with_metadata(meta::PRIORS, priors.to_metadata_string());
    let plain = Codec::builder(plain).backend(Backend::Cpu).build().unwrap();
    assert!(plain.read_hvq(&file).is_err());
    // A damaged context string is a typed error at load time.
    metadata.insert(meta::CONTEXT.to_string(), "hvqc1:AAAA".into());
    let bad = Weights::from_tensors(w.config().clone(), tensors, metadata).unwrap();
    assert!(matches!(
        Codec::builder(bad).backend(Backend::Cpu).build(),
        Err(CodecError::Priors(_))
    ));
}

#[test]
fn weight_bytes_load_and_bad_bytes_are_typed_errors() {
    let bytes = tiny_weights(1).to_safetensors(hvq_spec::StoreDtype::F32);
    let codec = Codec::from_weight_bytes(&bytes)
        .unwrap()
        .backend(Backend::Cpu)
        .build()
        .unwrap();
    assert_eq!(codec.fingerprint(), tiny_weights(1).fingerprint());
    assert!(matches!(
        Codec::from_weight_bytes(&bytes[..bytes.len() / 2]),
        Err(CodecError::Weights(_))
    ));
}

#[test]
fn default_model_is_embedded_or_a_clear_error() {
    match Codec::default_model() {
        Ok(builder) => {
            assert!(hvq_codec::has_default_model() && builder.backend(Backend::Cpu).build().is_ok())
        }
        Err(e) => {
            assert!(!hvq_codec::has_default_model());
            assert!(matches!(e, CodecError::NoDefaultModel));
        }
    }
}

#[test]
fn auto_backend_works_with_or_without_an_adapter() {
    // Picks wgpu where an adapter exists (e.g. lavapipe) and falls back to the CPU elsewhere;
    // either way the codec must encode and decode.
    let codec = Codec::builder(tiny_weights(1))
        .backend(Backend::Auto)
        .build()
        .unwrap();
    eprintln!("auto picked {}", codec.backend());
    let file = codec
        .encode_to_hvq(&pattern(16, 8), LevelSelection::All)
        .unwrap();
    let out = codec.decode_hvq(&file, None).unwrap();
    assert_eq!((out.image.width(), out.image.height()), (16, 8));
}

#[test]
fn files_move_between_cpu_and_wgpu_backends() {
    let gpu = match Codec::builder(tiny_weights(1))
        .backend(Backend::Wgpu)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            // Reported, not silently passed: this machine has no wgpu adapter.
            common::skip_without_adapter(
                "files_move_between_cpu_and_wgpu_backends",
                &e.to_string(),
            );
            return;
        }
    };
    let cpu = tiny_codec(1);
    let img = pattern(37, 29);
    let from_gpu = gpu.encode_to_hvq(&img, LevelSelection::All).unwrap();
    let from_cpu = cpu.encode_to_hvq(&img, LevelSelection::All).unwrap();
    assert_eq!(cpu.decode_hvq(&from_gpu, None).unwrap().level, 0);
    let a = cpu.decode_hvq(&from_cpu, None).unwrap().image;
    let b = gpu.decode_hvq(&from_cpu, None).unwrap().image;
    // Same tokens, two float pipelines: summation order differs by ~1e-5 relative, which can move
    // a value across an 8-bit rounding boundary (1 level); 2 keeps one level of margin.
    let worst = a
        .as_bytes()
        .iter()
        .zip(b.as_bytes())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap();
    assert!(worst <= 2, "CPU and wgpu decodes differ by {worst} levels");
}

#[test]
fn inspect_reports_parent_coding_and_its_share() {
    let codec = tiny_codec(1);
    let mut tokens = codec.encode(&pattern(37, 29), LevelSelection::All).unwrap();
    // Level 0 copies its parent (level 1) everywhere: parent coding is then the smaller choice.
    let parent = tokens.level(1).unwrap().clone();
    let fine = tokens.grids.iter_mut().find(|g| g.level == 0).unwrap();
    for y in 0..fine.height {
        for x in 0..fine.width {
            let (py, px) = (
                (y / 2).min(parent.height - 1),
                (x / 2).min(parent.width - 1),
            );
            fine.tokens[y * fine.width + x] = parent.tokens[py * parent.width + px];
        }
    }
    let bytes = codec.tokens_to_hvq(&tokens).unwrap();
    assert_eq!(codec.read_hvq(&bytes).unwrap().0, tokens);
    let info = inspect(&bytes).unwrap();
    // Coarsest first: level 2 has no parent in the file, so it is plain.
    assert_eq!(info.levels[0].level, 2);
    assert_eq!(info.levels[0].same_as_parent, None);
    let l0 = info.levels.iter().find(|l| l.level == 0).unwrap();
    let share = l0.same_as_parent.expect("level 0 is parent-coded");
    assert!(share > 0.99, "share {share}");
}

#[test]
fn inspect_lists_no_level_for_appended_bytes() {
    let codec = tiny_codec(1);
    let file = codec.encode_to_hvq(&pattern(37, 29), &[0, 1, 2]).unwrap();
    let intact = hvq_codec::inspect(&file).unwrap();
    for junk in [vec![0u8; 24], vec![0xFF; 100], (0..64u8).collect()] {
        let mut bytes = file.clone();
        bytes.extend_from_slice(&junk);
        let info = hvq_codec::inspect(&bytes).unwrap();
        assert_eq!(info.levels, intact.levels, "{} bytes appended", junk.len());
        assert_eq!(info.trailing_bytes, junk.len());
    }
}

/// On wgpu, images of one padded size run together in device batches: each still gets exactly
/// the tokens it gets alone, tiled images and bad ones included, in the order given.
#[test]
fn wgpu_batches_give_each_image_its_own_tokens() {
    let gpu = match Codec::builder(tiny_weights(1))
        .backend(Backend::Wgpu)
        // 64×64 runs in tiles of 32 px: the 64×48 and 70×60 photos are tiled, the rest whole.
        .tiling(Tiling::with_tile(32))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            common::skip_without_adapter(
                "wgpu_batches_give_each_image_its_own_tokens",
                &e.to_string(),
            );
            return;
        }
    };
    let images = vec![
        pattern(16, 16),
        pattern(70, 60),
        pattern(13, 15), // pads to 16×16: batched with the first
        image::RgbImage::new(0, 3).into(),
        pattern(24, 16),
        pattern(16, 16),
        pattern(64, 48),
    ];
    let batch = gpu.encode_batch(&images, LevelSelection::All);
    assert_eq!(batch.len(), images.len());
    for (i, (img, got)) in images.iter().zip(batch).enumerate() {
        match gpu.encode(img, LevelSelection::All) {
            Ok(want) => assert_eq!(got.unwrap(), want, "image {i}"),
            Err(e) => assert_eq!(got.unwrap_err().kind(), e.kind(), "image {i}"),
        }
    }
}
