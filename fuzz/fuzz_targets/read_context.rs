//! Whole-file decoding of arbitrary bytes against priors with a context model, so chunks of coding 2 are
//! decoded: a value or a typed error, never a panic. Seed it with `context-3level.hvq`; see `read_file.rs`
//! for the priors-hash stamping.
#![no_main]

#[path = "shared/context_priors.rs"]
mod context_priors;

static PRIORS: std::sync::LazyLock<hvq_format::Priors> = std::sync::LazyLock::new(context_priors::context_priors);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    if let Some(h) = data.get_mut(56..64) {
        h.copy_from_slice(&PRIORS.hash().to_le_bytes());
    }
    let limits = hvq_format::Limits { max_pixels: 1 << 20, max_file_bytes: 1 << 20, max_tokens: 1 << 18 };
    if let Ok(file) = hvq_format::read_file(&data, &PRIORS, &limits) {
        for g in &file.grids {
            assert!(g.tokens.iter().all(|&t| (t as usize) < PRIORS.codebook_size()), "token out of range");
        }
    }
});
