//! Streaming decoding: the input is pushed in pieces whose sizes come from its first byte; every push
//! returns progress or a typed error, never panics. See `read_file.rs` for the priors-hash stamping.
#![no_main]

static PRIORS: std::sync::LazyLock<hvq_format::Priors> = std::sync::LazyLock::new(|| hvq_format::Priors::uniform(3, 64).unwrap());

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let mut data = rest.to_vec();
    if let Some(h) = data.get_mut(56..64) {
        h.copy_from_slice(&PRIORS.hash().to_le_bytes());
    }
    let limits = hvq_format::Limits { max_pixels: 1 << 20, max_file_bytes: 1 << 20, max_tokens: 1 << 18 };
    let mut reader = hvq_format::Reader::new(&PRIORS, limits);
    for piece in data.chunks(usize::from(step).max(1)) {
        if reader.push(piece).is_err() {
            break;
        }
    }
    let _ = reader.finish();
});
