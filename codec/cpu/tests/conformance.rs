//! The CPU backend against libtorch's conformance vectors (`tests/vectors`, written by
//! `hvq-train export-vectors`, read by `hvq_tests::Vectors`): latents, tokens and decoded pixels.

use hvq_cpu::{CpuModel, ops};
use hvq_spec::{FeatureMap, fingerprint_hex};
use hvq_tests::{Vectors, max_abs_diff};

/// Squared distance in f64 from position `pos` of `p` to codebook row `code`.
fn distance(p: &FeatureMap, pos: usize, codebook: &[f32], code: usize) -> f64 {
    let d = p.channels;
    (0..d)
        .map(|c| (p.data[c * p.plane() + pos] as f64 - codebook[code * d + c] as f64).powi(2))
        .sum()
}

#[test]
fn cpu_backend_reproduces_libtorch_vectors() {
    let vectors = Vectors::load();
    let (mut tokens, mut agreeing, mut worst_latent_rel, mut worst_pixel) = (0, 0, 0.0f64, 0.0f32);
    for case in vectors.cases() {
        let name = &case.case;
        let weights = case.weights();
        let fingerprint = fingerprint_hex(&weights.fingerprint());
        assert_eq!(fingerprint, case.fingerprint, "{name}: fingerprint");
        let model = CpuModel::new(weights);
        let padded = ops::pad_edge(&case.input_map(), model.config().coarsest_stride()).unwrap();
        let latents = model.encode_latents(&padded).unwrap();
        assert_eq!(latents.len(), case.levels);
        let codebook = model.weights().tensor("quantizer.codebook");
        for (level, ours) in latents.iter().enumerate() {
            let theirs = case.latent(level);
            assert_eq!(
                (ours.channels, ours.height, ours.width),
                (theirs.channels, theirs.height, theirs.width)
            );
            let scale = theirs.data.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            let worst = max_abs_diff(&ours.data, &theirs.data) as f64;
            let rel = worst / scale.max(1e-6);
            worst_latent_rel = worst_latent_rel.max(rel);
            // Both sides are f32 with different summation orders (GEMM blocking, Winograd
            // transforms, oneDNN kernels) through ~15 layers: differences of ~1e-6 of the latent
            // scale are rounding; a wrong op or index moves values by ~1e-1.
            assert!(
                rel < 1e-4,
                "{name} latent {level}: max diff {worst} vs scale {scale}"
            );

            let their_tokens = case.tokens(level);
            let our_tokens = ops::nearest_codes(ours, codebook).unwrap();
            assert_eq!(our_tokens.len(), their_tokens.tokens.len());
            for (pos, (&a, &b)) in our_tokens.iter().zip(&their_tokens.tokens).enumerate() {
                tokens += 1;
                if a == b {
                    agreeing += 1;
                    continue;
                }
                // A flip is only acceptable between two entries libtorch's own latent finds
                // (nearly) equidistant: the latents agree to ~1e-6 relative, so distances differ
                // by about 1e-5 of their size at most.
                let (da, db) = (
                    distance(theirs, pos, &codebook.data, a as usize),
                    distance(theirs, pos, &codebook.data, b as usize),
                );
                assert!(
                    (da - db).abs() <= 1e-4 * (1.0 + da.max(db)),
                    "{name} level {level} position {pos}: token {a} (distance {da}) vs libtorch's {b} (distance {db}) is not a near-tie"
                );
            }

            // Decoded from libtorch's tokens.
            let rgb = model.decode(their_tokens).unwrap();
            let rgb = ops::crop(&rgb, case.height, case.width).unwrap();
            let theirs = case.decoded(level);
            assert_eq!(
                (rgb.channels, rgb.height, rgb.width),
                (theirs.channels, theirs.height, theirs.width)
            );
            let worst = max_abs_diff(&rgb.data, &theirs.data);
            worst_pixel = worst_pixel.max(worst);
            // Same tokens in, so only float summation order differs: pixels in [0, 1] agree to
            // ~1e-6; 1e-3 (a quarter of one 8-bit step) still means identical 8-bit output almost
            // everywhere.
            assert!(
                worst <= 1e-3,
                "{name} decoded level {level}: max abs diff {worst}"
            );
        }
    }
    eprintln!(
        "conformance: {} cases, token agreement {agreeing}/{tokens} ({:.3}%), worst latent diff {worst_latent_rel:.2e} of scale, worst pixel diff {worst_pixel:.2e}",
        vectors.cases().len(),
        100.0 * agreeing as f64 / tokens as f64,
    );
}
