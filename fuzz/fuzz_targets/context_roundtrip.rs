//! The writer and reader agree on any tokens: arbitrary image sizes and token grids (smooth ones, which the
//! context model codes, and rough ones, which fall back to codings 0/1) are written with the context-model
//! priors and must read back exactly, and every chunk boundary must be a readable prefix of its levels.
#![no_main]

#[path = "shared/context_priors.rs"]
mod context_priors;

use hvq_format::{Header, Limits, TokenGrid};

static PRIORS: std::sync::LazyLock<hvq_format::Priors> = std::sync::LazyLock::new(context_priors::context_priors);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [w, h, mode, rest @ ..] = data else { return };
    let n = PRIORS.codebook_size() as u32;
    let levels = PRIORS.levels() as u8; // the file's levels must be the priors' levels
    let header = Header {
        width: 1 + u32::from(*w),
        height: 1 + u32::from(*h),
        fingerprint: [0x5A; 32],
        model_levels: levels,
        coarsest_stride: 4 << (levels - 1),
        priors_hash: PRIORS.hash(),
    };
    // Tokens come from the input bytes, cycled; in smooth mode each byte is a step from the left
    // neighbour, which is what the context model predicts well.
    let mut bytes = rest.iter().cycle();
    let mut grids: Vec<TokenGrid> = Vec::new();
    for level in (0..levels as usize).rev() {
        let Some((gh, gw)) = header.grid_dims(level) else { return };
        let (gh, gw) = (gh as usize, gw as usize);
        let mut tokens = Vec::with_capacity(gh * gw);
        for i in 0..gh * gw {
            let b = u32::from(bytes.next().copied().unwrap_or(0));
            let t = if mode % 2 == 1 && i % gw > 0 {
                (tokens[i - 1] + n + b % 5 - 2) % n
            } else {
                b % n
            };
            tokens.push(t);
        }
        grids.push(TokenGrid { level, height: gh, width: gw, tokens });
    }
    let file = hvq_format::write_file(&header, &grids, &PRIORS).expect("valid input is written");
    let read = hvq_format::read_file(&file, &PRIORS, &Limits::unlimited()).expect("written file reads");
    assert_eq!(read.grids, grids, "round trip");
    // Every complete-chunk prefix keeps exactly the levels before it.
    let mut at = hvq_format::HEADER_LEN;
    let mut complete = 0;
    while at < file.len() {
        let len = u32::from_le_bytes(file[at + 12..at + 16].try_into().unwrap()) as usize;
        at += hvq_format::CHUNK_HEADER_LEN + len + hvq_format::CHUNK_TRAILER_LEN;
        complete += 1;
        let prefix = hvq_format::read_file(&file[..at], &PRIORS, &Limits::unlimited()).expect("prefix reads");
        assert_eq!(prefix.grids[..], grids[..complete], "prefix of {complete} chunks");
    }
});
