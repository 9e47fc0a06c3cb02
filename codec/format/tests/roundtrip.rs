//! Round trips, progressive prefixes, truncation and bit-flip robustness, coded size.

mod common;

use common::{Dist, chunk_boundaries, grids, header, trained_priors};
use hvq_format::{FormatError, Limits, Priors, Reader, read_file, read_file_strict, write_file};

/// (width, height, levels, codebook size, distribution)
const CASES: &[(u32, u32, u8, usize, Dist)] = &[
    (1, 1, 1, 2, Dist::Uniform),
    (17, 5, 1, 16, Dist::Skewed),
    (64, 64, 2, 1024, Dist::Uniform),
    (100, 37, 2, 1024, Dist::Skewed),
    (256, 256, 3, 8192, Dist::Skewed),
    (33, 250, 3, 20000, Dist::Uniform),
    (120, 80, 4, 300, Dist::Skewed),
    (7, 9, 4, 2, Dist::Uniform),
];

#[test]
fn round_trip_equals_tokens_for_sizes_levels_and_distributions() {
    for (i, &(w, h, levels, n, dist)) in CASES.iter().enumerate() {
        for priors in [
            Priors::uniform(levels as usize, n).unwrap(),
            trained_priors(levels, n, dist, 100 + i as u64),
        ] {
            let hd = header(w, h, levels, &priors);
            let gs = grids(&hd, n, dist, i as u64);
            let bytes = write_file(&hd, &gs, &priors).unwrap();
            let file = read_file_strict(&bytes, &priors, &Limits::default()).unwrap();
            assert_eq!(file.header, hd, "case {i}");
            assert_eq!(file.grids, gs, "case {i}");
            assert!(!file.truncated_tail);
        }
    }
}

#[test]
fn any_subset_of_levels_round_trips() {
    let priors = trained_priors(4, 64, Dist::Skewed, 1);
    let hd = header(96, 64, 4, &priors);
    let all = grids(&hd, 64, Dist::Skewed, 2);
    for mask in 0u32..16 {
        let subset: Vec<_> = all
            .iter()
            .filter(|g| mask & (1 << g.level) != 0)
            .cloned()
            .collect();
        let bytes = write_file(&hd, &subset, &priors).unwrap();
        assert_eq!(
            read_file(&bytes, &priors, &Limits::default())
                .unwrap()
                .grids,
            subset,
            "mask {mask:04b}"
        );
    }
}

#[test]
fn every_chunk_boundary_prefix_decodes_the_chunks_it_has() {
    let priors = trained_priors(3, 512, Dist::Skewed, 3);
    let hd = header(80, 48, 3, &priors);
    let gs = grids(&hd, 512, Dist::Skewed, 4);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    let bounds = chunk_boundaries(&bytes);
    assert_eq!(bounds.len(), gs.len() + 1);
    for (k, &end) in bounds.iter().enumerate() {
        let file = read_file_strict(&bytes[..end], &priors, &Limits::default()).unwrap();
        assert_eq!(file.grids, gs[..k]);
        assert!(!file.truncated_tail);
    }
}

/// Every other length is either an error or the complete chunks before the cut, never a panic.
#[test]
fn every_truncation_is_a_clean_error_or_fewer_levels() {
    let priors = trained_priors(3, 256, Dist::Skewed, 5);
    let hd = header(40, 24, 3, &priors);
    let gs = grids(&hd, 256, Dist::Skewed, 6);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    let bounds = chunk_boundaries(&bytes);
    for len in 0..bytes.len() {
        let complete = bounds
            .iter()
            .filter(|&&b| b <= len)
            .count()
            .saturating_sub(1);
        match read_file(&bytes[..len], &priors, &Limits::default()) {
            Ok(file) => {
                assert_eq!(file.grids, gs[..complete], "len {len}");
                assert_eq!(file.truncated_tail, !bounds.contains(&len), "len {len}");
            }
            Err(FormatError::NeedMoreData { needed_at_least }) => {
                assert!(len < needed_at_least, "len {len}")
            }
            Err(e) => panic!("len {len}: unexpected {e:?}"),
        }
        if !bounds.contains(&len) {
            assert!(
                read_file_strict(&bytes[..len], &priors, &Limits::default()).is_err(),
                "strict, len {len}"
            );
        }
    }
}

#[test]
fn reader_fed_byte_by_byte_reports_levels_as_they_complete() {
    let priors = trained_priors(3, 256, Dist::Skewed, 7);
    let hd = header(64, 40, 3, &priors);
    let gs = grids(&hd, 256, Dist::Skewed, 8);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    let bounds = chunk_boundaries(&bytes);
    let mut reader = Reader::new(&priors, Limits::default());
    for (i, b) in bytes.iter().enumerate() {
        let p = reader.push(std::slice::from_ref(b)).unwrap();
        let len = i + 1;
        assert_eq!(p.header.is_some(), len >= hvq_format::HEADER_LEN);
        let complete = bounds
            .iter()
            .filter(|&&e| e <= len)
            .count()
            .saturating_sub(1);
        assert_eq!(
            p.complete_levels,
            gs[..complete].iter().map(|g| g.level).collect::<Vec<_>>()
        );
        assert_eq!(p.need_more, len < bytes.len());
    }
    assert_eq!(reader.finish_strict().unwrap().grids, gs);
}

/// CRC32 catches every single-bit error: in the header, a chunk header or a payload.
#[test]
fn every_single_bit_flip_is_detected() {
    let priors = trained_priors(3, 64, Dist::Skewed, 9);
    let hd = header(20, 12, 3, &priors);
    let gs = grids(&hd, 64, Dist::Skewed, 10);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    assert!(
        bytes.len() < 400,
        "keep the exhaustive test small: {} bytes",
        bytes.len()
    );
    let mut damaged = bytes.clone();
    for bit in 0..bytes.len() * 8 {
        damaged[bit / 8] ^= 1 << (bit % 8);
        let got = read_file(&damaged, &priors, &Limits::default());
        assert!(got.is_err(), "flip of bit {bit} went unnoticed: {got:?}");
        damaged[bit / 8] ^= 1 << (bit % 8);
    }
}

/// Bytes appended to a whole file (or to a prefix ending on a chunk boundary) that are not a chunk
/// leave every level readable: a tail shorter than a chunk header is a truncated tail as before,
/// a longer one is recognised as not a chunk. Strict reading refuses both. A damaged chunk header
/// (two bits or fewer, or the expected level and grid) stays an error.
#[test]
fn appended_data_keeps_the_levels_but_damage_stays_an_error() {
    let priors = trained_priors(3, 64, Dist::Skewed, 12);
    let hd = header(20, 12, 3, &priors);
    let gs = grids(&hd, 64, Dist::Skewed, 13);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    let bounds = chunk_boundaries(&bytes);
    let mut rng = common::rng(14);
    let tails: Vec<Vec<u8>> = (0..64)
        .map(|len| (0..len).map(|_| rand::Rng::r#gen::<u8>(&mut rng)).collect())
        .chain([
            vec![0; 100],
            vec![0xFF; 100],
            bytes.clone(),
            b"\n".repeat(30),
        ])
        .collect();
    for (complete, &end) in bounds.iter().enumerate().skip(1) {
        for tail in &tails {
            let mut b = bytes[..end].to_vec();
            b.extend_from_slice(tail);
            let file = read_file(&b, &priors, &Limits::default()).unwrap();
            assert_eq!(
                file.grids,
                gs[..complete],
                "after chunk {complete}, tail {tail:?}"
            );
            assert_eq!(file.truncated_tail, !tail.is_empty());
            let appended = tail.len() >= hvq_format::CHUNK_HEADER_LEN;
            assert_eq!(file.appended_data_at, appended.then_some(end as u64));
            let strict = read_file_strict(&b, &priors, &Limits::default());
            match strict {
                Ok(_) => assert!(tail.is_empty()),
                Err(FormatError::TrailingData { offset, len }) => {
                    assert!(appended);
                    assert_eq!((offset, len), (end as u64, tail.len() as u64));
                }
                Err(FormatError::Truncated { .. }) => assert!(!appended && !tail.is_empty()),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
    // Every one- and two-bit flip of the last chunk's header (where appended data would start
    // if the chunk were not there) is damage, not the file's end.
    let at = bounds[bounds.len() - 2];
    let bits = hvq_format::CHUNK_HEADER_LEN * 8;
    for a in 0..bits {
        for b in a..bits {
            let mut damaged = bytes.clone();
            damaged[at + a / 8] ^= 1 << (a % 8);
            damaged[at + b / 8] ^= 1 << (b % 8);
            let got = read_file(&damaged, &priors, &Limits::default());
            assert!(got.is_err() || a == b, "bits {a} and {b}: {got:?}");
        }
    }
}

/// Skewed tokens with trained priors cost less than `log2 N` bits each.
#[test]
fn skewed_tokens_code_below_raw_bits() {
    let n = 8192;
    let priors = trained_priors(3, n, Dist::Skewed, 11);
    let hd = header(256, 256, 3, &priors);
    let gs = grids(&hd, n, Dist::Skewed, 12);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    let tokens: usize = gs.iter().map(|g| g.tokens.len()).sum();
    let raw_bits = tokens as f64 * (n as f64).log2();
    let coded_bits = (bytes.len() * 8) as f64;
    assert!(
        coded_bits < 0.8 * raw_bits,
        "coded {coded_bits} vs raw {raw_bits}"
    );
}

/// Uniform tokens with uniform priors: each chunk's payload is at most `count · log2 N · (1 + 1e-6)` bits
/// plus 64 bits (the ANS coder's final state), and framing adds 24 bytes per chunk and 68 for the header.
#[test]
fn uniform_tokens_code_at_most_raw_bits_plus_stated_overhead() {
    for &(w, h, levels, n) in &[
        (256u32, 256u32, 3u8, 1024usize),
        (64, 48, 2, 20000),
        (8, 8, 1, 2),
        (4, 4, 1, 3),
    ] {
        let priors = Priors::uniform(levels as usize, n).unwrap();
        let hd = header(w, h, levels, &priors);
        let gs = grids(&hd, n, Dist::Uniform, 13);
        let bytes = write_file(&hd, &gs, &priors).unwrap();
        let bounds = chunk_boundaries(&bytes);
        for (g, pair) in gs.iter().zip(bounds.windows(2)) {
            let payload_bits = ((pair[1] - pair[0] - 24) * 8) as f64;
            let bound = g.tokens.len() as f64 * (n as f64).log2() * (1.0 + 1e-6) + 64.0;
            assert!(
                payload_bits <= bound,
                "N {n}, level {}: {payload_bits} > {bound}",
                g.level
            );
        }
    }
}

#[test]
fn parent_coding_shrinks_correlated_levels() {
    let n = 1024;
    let priors = trained_priors(2, n, Dist::Skewed, 14);
    let hd = header(128, 128, 2, &priors);
    let gs = grids(&hd, n, Dist::Skewed, 15);
    let with_parent = write_file(&hd, &gs, &priors).unwrap();
    // The fine level alone cannot use its parent, so it is plain-coded.
    let alone = write_file(&hd, &gs[1..], &priors).unwrap();
    let coarse_only = write_file(&hd, &gs[..1], &priors).unwrap();
    let fine_with = with_parent.len() - coarse_only.len();
    let fine_alone = alone.len() - hvq_format::HEADER_LEN;
    assert_eq!(
        with_parent[coarse_only.len() + 1],
        1,
        "coding byte of the fine chunk"
    );
    assert!(
        fine_with * 10 < fine_alone * 8,
        "with parent {fine_with} B, alone {fine_alone} B"
    );
}

#[test]
fn reader_with_other_priors_is_refused() {
    let priors = trained_priors(2, 64, Dist::Skewed, 16);
    let other = Priors::uniform(2, 64).unwrap();
    let hd = header(16, 16, 2, &priors);
    let bytes = write_file(&hd, &grids(&hd, 64, Dist::Skewed, 17), &priors).unwrap();
    let err = read_file(&bytes, &other, &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        FormatError::PriorsMismatch {
            expected: other.hash(),
            got: priors.hash()
        }
    );
    let three = Priors::uniform(3, 64).unwrap();
    let mut hd3 = hd.clone();
    hd3.priors_hash = three.hash();
    assert!(matches!(
        write_file(&hd3, &[], &three),
        Err(FormatError::PriorsLevels {
            priors_levels: 3,
            model_levels: 2
        })
    ));
}

#[test]
fn chunk_info_gives_offsets_lengths_and_coding() {
    let priors = trained_priors(3, 256, Dist::Skewed, 18);
    let hd = header(64, 64, 3, &priors);
    let gs = grids(&hd, 256, Dist::Skewed, 19);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    let file = read_file(&bytes, &priors, &Limits::default()).unwrap();
    let bounds = chunk_boundaries(&bytes);
    for (i, c) in file.chunks.iter().enumerate() {
        assert_eq!(
            (c.level, c.offset as usize, c.offset as usize + c.len),
            (gs[i].level, bounds[i], bounds[i + 1])
        );
        assert_eq!(c.parent_coded, bytes[bounds[i] + 1] == 1);
    }
    assert!(
        !file.chunks[0].parent_coded,
        "the first chunk has no parent"
    );
}

/// The DESIGN.md example: a 256×256 image gives 16×16, 32×32 and 64×64 grids with the `paper` preset.
#[test]
fn header_from_model_config_matches_the_level_strides() {
    let cfg = hvq_spec::ModelConfig::paper();
    let priors = Priors::uniform(cfg.levels, 16).unwrap();
    let hd = hvq_format::Header::new(256, 256, [0; 32], &cfg, &priors);
    for l in 0..cfg.levels {
        let side = (256 / cfg.level_stride(l)) as u64;
        assert_eq!(hd.grid_dims(l), Some((side, side)));
    }
    assert_eq!(hd.grid_dims(cfg.levels), None);
}
