//! Whole-file decoding of arbitrary bytes: returns a value or a typed error, never panics.
//! Built with `--cfg fuzzing`, the reader skips CRC checks and the target stamps the priors hash in, so the
//! fuzzer reaches the chunk parser and the entropy decoder instead of stopping at checksums.
#![no_main]

static PRIORS: std::sync::LazyLock<hvq_format::Priors> = std::sync::LazyLock::new(|| hvq_format::Priors::uniform(3, 64).unwrap());

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    if let Some(h) = data.get_mut(56..64) {
        h.copy_from_slice(&PRIORS.hash().to_le_bytes());
    }
    let limits = hvq_format::Limits { max_pixels: 1 << 20, max_file_bytes: 1 << 20, max_tokens: 1 << 18 };
    let _ = hvq_format::read_file(&data, &PRIORS, &limits);
});
