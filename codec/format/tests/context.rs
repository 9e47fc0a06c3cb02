//! Coding 2: tokens predicted from their parent and causal neighbours through the codebook's geometry.

mod common;

use common::{
    Dist, chunk_boundaries, context_priors, grids, header, line_neighbours, smooth_grids,
};
use hvq_format::{
    CHUNK_HEADER_LEN, CHUNK_TRAILER_LEN, ContextFitter, ContextModel, FormatError, Limits, Priors,
    PriorsFault, read_file, write_file,
};

#[test]
fn context_coding_round_trips_and_is_chosen_for_structured_tokens() {
    let n = 256;
    let priors = context_priors(3, n, 16, 100);
    for (w, h, seed) in [(128, 96, 1), (40, 30, 2), (16, 16, 3), (200, 8, 4)] {
        let hd = header(w, h, 3, &priors);
        let gs = smooth_grids(&hd, n, seed);
        let bytes = write_file(&hd, &gs, &priors).unwrap();
        let file = read_file(&bytes, &priors, &Limits::default()).unwrap();
        assert_eq!(file.grids, gs, "{w}x{h}");
        if w == 128 {
            assert!(
                file.chunks.iter().all(|c| c.context_coded),
                "{:?}",
                file.chunks
            );
            // Against the same priors without the context model (plain or parent coding).
            let plain = Priors::from_metadata_string(&priors.to_metadata_string()).unwrap();
            let hd_plain = header(w, h, 3, &plain);
            let smaller = write_file(&hd_plain, &gs, &plain).unwrap();
            assert!(
                bytes.len() * 10 < smaller.len() * 8,
                "context {} vs {} bytes",
                bytes.len(),
                smaller.len()
            );
        }
    }
}

#[test]
fn unstructured_tokens_still_round_trip_with_a_context_model() {
    // Tokens the context model predicts badly: the writer falls back to whatever is smallest.
    let priors = context_priors(2, 256, 8, 7);
    let hd = header(64, 48, 2, &priors);
    for dist in [Dist::Uniform, Dist::Skewed] {
        let gs = grids(&hd, 256, dist, 9);
        let bytes = write_file(&hd, &gs, &priors).unwrap();
        assert_eq!(
            read_file(&bytes, &priors, &Limits::default())
                .unwrap()
                .grids,
            gs
        );
    }
}

#[test]
fn every_prefix_of_a_context_coded_file_decodes_its_levels() {
    let priors = context_priors(3, 128, 16, 11);
    let hd = header(96, 64, 3, &priors);
    let gs = smooth_grids(&hd, 128, 12);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    for (k, &end) in chunk_boundaries(&bytes).iter().enumerate() {
        let file = read_file(&bytes[..end], &priors, &Limits::default()).unwrap();
        assert_eq!(file.grids, gs[..k]);
    }
    // A level coded without its parent before it (a file holding levels 2 and 0) still round-trips.
    let skip = vec![gs[0].clone(), gs[2].clone()];
    let bytes = write_file(&hd, &skip, &priors).unwrap();
    assert_eq!(
        read_file(&bytes, &priors, &Limits::default())
            .unwrap()
            .grids,
        skip
    );
}

#[test]
fn a_file_needs_the_context_model_it_was_written_with() {
    let priors = context_priors(2, 64, 8, 3);
    let without = Priors::from_metadata_string(&priors.to_metadata_string()).unwrap();
    assert_ne!(
        priors.hash(),
        without.hash(),
        "the hash covers the context model"
    );
    let hd = header(32, 32, 2, &priors);
    let bytes = write_file(&hd, &smooth_grids(&hd, 64, 4), &priors).unwrap();
    assert!(matches!(
        read_file(&bytes, &without, &Limits::default()),
        Err(FormatError::PriorsMismatch { .. })
    ));
}

#[test]
fn the_context_model_survives_its_metadata_string_and_fits_deterministically() {
    let a = context_priors(3, 64, 8, 5);
    let b = context_priors(3, 64, 8, 5);
    assert_eq!(a.hash(), b.hash());
    let ctx = a.context().unwrap();
    let s = ctx.to_metadata_string();
    let back = ContextModel::from_metadata_string(&s).unwrap();
    assert_eq!(&back, ctx);
    // Structured tokens: the fitted weights favour the contexts over the unconditional model.
    let w = ctx.weights(0).unwrap();
    assert!(w[0] < 0.5, "{w:?}");
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
}

#[test]
fn bad_context_model_strings_and_shapes_are_typed_errors() {
    let ctx = context_priors(2, 32, 4, 1).context().unwrap().clone();
    let good = ctx.to_metadata_string();
    let fault = |s: &str| match ContextModel::from_metadata_string(s) {
        Err(FormatError::InvalidPriors { fault }) => Some(fault),
        Ok(_) => None,
        Err(e) => panic!("unexpected {e}"),
    };
    assert_eq!(fault("hvqp1:AAAA"), Some(PriorsFault::ContextTag));
    assert_eq!(fault("hvqc1:!!"), Some(PriorsFault::Base64));
    // Every truncation is an error, never a panic.
    for len in "hvqc1:".len()..good.len() {
        assert!(
            ContextModel::from_metadata_string(&good[..len]).is_err(),
            "{len}"
        );
    }
    // A huge declared shape in a tiny string is refused before allocating.
    use base64::Engine as _;
    let huge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0x80, 0x80, 0x40, 0x80, 0x08, 3]);
    assert!(ContextModel::from_metadata_string(&format!("hvqc1:{huge}")).is_err());
    // A list naming an entry outside the codebook, and a fitter with the wrong list length.
    let mut lists = line_neighbours(8, 2);
    lists[3] = 8;
    assert_eq!(
        ContextFitter::new(8, 2, lists, 1).err(),
        Some(FormatError::InvalidPriors {
            fault: PriorsFault::ContextTable
        })
    );
    assert!(ContextFitter::new(8, 3, line_neighbours(8, 2), 1).is_err());
    // A context model for another shape cannot be attached.
    let other = Priors::uniform(3, 32).unwrap();
    assert_eq!(
        other.with_context(ctx).err(),
        Some(FormatError::InvalidPriors {
            fault: PriorsFault::ContextShape
        })
    );
}

#[test]
fn damaged_context_coded_payloads_are_typed_errors_or_other_tokens_never_panics() {
    // What the CRCs would catch, with the CRCs recomputed: random byte changes inside context-coded
    // payloads reach the coding-2 decoder (stage-1 symbols out of range, escapes, early ends).
    use rand::Rng;
    let n = 256;
    let priors = context_priors(3, n, 16, 100);
    let hd = header(64, 48, 3, &priors);
    let gs = smooth_grids(&hd, n, 9);
    let clean = write_file(&hd, &gs, &priors).unwrap();
    let chunks = read_file(&clean, &priors, &Limits::default())
        .unwrap()
        .chunks;
    assert!(chunks.iter().all(|c| c.context_coded), "{chunks:?}");
    let bounds = chunk_boundaries(&clean);
    let mut rng = common::rng(77);
    let (mut errors, mut decoded) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = clean.clone();
        for _ in 0..rng.gen_range(1..4) {
            let c = rng.gen_range(0..bounds.len() - 1);
            // Payload bytes only, not a chunk's header or trailer.
            let (lo, hi) = (
                bounds[c] + CHUNK_HEADER_LEN,
                bounds[c + 1] - CHUNK_TRAILER_LEN,
            );
            if lo < hi {
                bytes[rng.gen_range(lo..hi)] ^= rng.gen_range(1..=255u8);
            }
        }
        common::reseal(&mut bytes, &priors);
        match read_file(&bytes, &priors, &Limits::default()) {
            Ok(file) => {
                decoded += 1;
                for (g, want) in file.grids.iter().zip(&gs) {
                    assert_eq!((g.height, g.width), (want.height, want.width));
                    assert!(g.tokens.iter().all(|&t| (t as usize) < n));
                }
            }
            Err(FormatError::CorruptPayload { .. }) | Err(FormatError::Truncated { .. }) => {
                errors += 1
            }
            Err(e) => panic!("unexpected error kind for a damaged payload: {e:?}"),
        }
    }
    assert!(errors > 0, "{errors} errors, {decoded} decoded");
}

/// One level of tokens the codebook's geometry cannot predict: along a row each token is
/// `σ(t) = 7t + 13 mod n` of its left neighbour (far from `t` on the line codebook of
/// [`line_neighbours`]), and each row starts anywhere.
fn successor_grid(width: u32, height: u32, n: usize, seed: u64) -> Vec<hvq_format::TokenGrid> {
    use rand::Rng;
    let mut rng = common::rng(seed);
    let (w, h) = (width as usize / 4, height as usize / 4);
    let mut tokens = Vec::with_capacity(w * h);
    for _ in 0..h {
        let mut t = rng.gen_range(0..n as u32);
        for _ in 0..w {
            tokens.push(t);
            t = (7 * t + 13) % n as u32;
        }
    }
    vec![hvq_format::TokenGrid {
        level: 0,
        height: h,
        width: w,
        tokens,
    }]
}

/// Priors and a context model fitted on four successor grids, with nearest-first or learned lists.
fn successor_priors(n: usize, m: usize, learn: bool) -> Priors {
    let mut counts = vec![vec![0u64; n]];
    let mut fitter = ContextFitter::new(n, m, line_neighbours(n, m), 1).unwrap();
    if learn {
        fitter = fitter.learn_lists(1000.0).unwrap();
    }
    for seed in 40..44 {
        let gs = successor_grid(128, 96, n, seed);
        gs[0]
            .tokens
            .iter()
            .for_each(|&t| counts[0][t as usize] += 1);
        assert!(fitter.add_image(&gs));
    }
    let priors = Priors::from_counts(counts).unwrap();
    let context = fitter.finish(&priors).unwrap();
    priors.with_context(context).unwrap()
}

#[test]
fn learned_lists_find_the_entries_that_follow_and_code_them_cheaply() {
    let n = 64;
    let nearest = successor_priors(n, 4, false);
    let learned = successor_priors(n, 4, true);
    assert_eq!(learned.hash(), successor_priors(n, 4, true).hash());
    assert_ne!(learned.hash(), nearest.hash());
    // A held-out image of the same process, written and read back with each model.
    let size = |priors: &Priors| {
        let hd = header(128, 96, 1, priors);
        let gs = successor_grid(128, 96, n, 99);
        let bytes = write_file(&hd, &gs, priors).unwrap();
        let file = read_file(&bytes, priors, &Limits::default()).unwrap();
        assert_eq!(file.grids, gs);
        bytes.len()
    };
    let (geometry, learnt) = (size(&nearest), size(&learned));
    assert!(
        learnt * 3 < geometry,
        "learned lists {learnt} bytes, nearest lists {geometry}"
    );
    // The left context now carries the model.
    let w = learned.context().unwrap().weights(0).unwrap();
    assert!(w[2] > 0.5, "{w:?}");
}

#[test]
fn learned_lists_need_a_positive_finite_prior() {
    for prior in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let fitter = ContextFitter::new(8, 2, line_neighbours(8, 2), 1).unwrap();
        assert_eq!(
            fitter.learn_lists(prior).err(),
            Some(FormatError::InvalidPriors {
                fault: PriorsFault::ContextTable
            }),
            "{prior}"
        );
    }
}

#[test]
fn the_fitter_keeps_a_bounded_number_of_tokens() {
    let grid = |tokens: usize| hvq_format::TokenGrid {
        level: 0,
        height: 1,
        width: tokens,
        tokens: vec![0; tokens],
    };
    let mut fitter = ContextFitter::new(8, 2, line_neighbours(8, 2), 1).unwrap();
    assert!(fitter.add_image(&[grid(hvq_format::MAX_FIT_TOKENS - 10)]));
    assert!(!fitter.add_image(&[grid(11)]), "past the budget");
    assert!(fitter.add_image(&[grid(10)]), "exactly up to the budget");
    assert!(!fitter.add_image(&[grid(1)]));
}
