//! Each kind of bad input gets its own typed error.

mod common;

use common::{Dist, grids, header, trained_priors};
use hvq_format::{
    FormatError, HEADER_LEN, LimitKind, Limits, Priors, PriorsFault, TokenGrid, check_fingerprint,
    read_file, read_header, write_file,
};

fn sample() -> (Priors, hvq_format::Header, Vec<TokenGrid>, Vec<u8>) {
    let priors = trained_priors(2, 32, Dist::Skewed, 1);
    let hd = header(24, 16, 2, &priors);
    let gs = grids(&hd, 32, Dist::Skewed, 2);
    let bytes = write_file(&hd, &gs, &priors).unwrap();
    (priors, hd, gs, bytes)
}

/// Rewrites the header CRC so that a deliberately changed field is what the reader sees.
fn reseal_header(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..64]);
    bytes[64..68].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn short_input_needs_more_data_but_bad_magic_fails_at_once() {
    let (_, _, _, bytes) = sample();
    for len in 0..HEADER_LEN {
        assert_eq!(
            read_header(&bytes[..len]),
            Err(FormatError::NeedMoreData {
                needed_at_least: HEADER_LEN
            })
        );
    }
    assert!(matches!(
        read_header(b"GIF8"),
        Err(FormatError::BadMagic { .. })
    ));
    // Text-mode damage: CRLF → LF.
    let mut text = bytes[..4].to_vec();
    text.extend_from_slice(b"\n\x1a\n");
    assert!(matches!(
        read_header(&text),
        Err(FormatError::BadMagic { .. })
    ));
}

#[test]
fn unsupported_version_is_named() {
    let (priors, _, _, mut bytes) = sample();
    bytes[8] = 2;
    assert_eq!(
        read_file(&bytes, &priors, &Limits::default()).unwrap_err(),
        FormatError::UnsupportedVersion {
            got: 2,
            supported: 1
        }
    );
}

#[test]
fn header_damage_is_a_header_checksum_error() {
    let (priors, _, _, mut bytes) = sample();
    bytes[30] ^= 4;
    assert!(matches!(
        read_file(&bytes, &priors, &Limits::default()),
        Err(FormatError::HeaderChecksum { .. })
    ));
}

#[test]
fn chunk_damage_names_the_chunk() {
    let (priors, _, _, bytes) = sample();
    let second = common::chunk_boundaries(&bytes)[1];
    let mut b = bytes.clone();
    b[second + 5] ^= 1; // chunk 1's height field
    assert!(matches!(
        read_file(&b, &priors, &Limits::default()),
        Err(FormatError::ChunkHeaderChecksum { chunk: 1, .. })
    ));
    let mut b = bytes.clone();
    *b.last_mut().unwrap() ^= 0x80;
    assert!(matches!(
        read_file(&b, &priors, &Limits::default()),
        Err(FormatError::ChunkChecksum {
            chunk: 1,
            level: 0,
            ..
        })
    ));
}

#[test]
fn fingerprint_mismatch_has_its_own_variant() {
    let (priors, hd, _, bytes) = sample();
    let file = read_file(&bytes, &priors, &Limits::default()).unwrap();
    assert_eq!(check_fingerprint(&file.header, &hd.fingerprint), Ok(()));
    assert!(matches!(
        check_fingerprint(&file.header, &[0; 32]),
        Err(FormatError::FingerprintMismatch { .. })
    ));
}

#[test]
fn header_fields_outside_their_rules_are_refused() {
    let (priors, _, _, bytes) = sample();
    // (byte offset, new little-endian value, field)
    for (at, value, field) in [
        (12usize, 0u32, "width"),
        (16, 0, "height"),
        (20, 12, "coarsest_stride"),
        (20, 0, "coarsest_stride"),
    ] {
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        reseal_header(&mut b);
        assert_eq!(
            read_file(&b, &priors, &Limits::default()).unwrap_err(),
            FormatError::InvalidHeader {
                field,
                got: value.into()
            }
        );
    }
    let mut b = bytes.clone();
    b[9] = 0;
    reseal_header(&mut b);
    assert!(matches!(
        read_file(&b, &priors, &Limits::default()),
        Err(FormatError::InvalidHeader {
            field: "model_levels",
            ..
        })
    ));
}

#[test]
fn limits_are_enforced_before_decoding() {
    let (priors, _, gs, bytes) = sample();
    let tight = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        read_file(&bytes, &priors, &l).unwrap_err()
    };
    assert!(matches!(
        tight(|l| l.max_pixels = 100),
        FormatError::OverLimit {
            what: LimitKind::Pixels,
            limit: 100,
            got: 384
        }
    ));
    assert!(matches!(
        tight(|l| l.max_file_bytes = 80),
        FormatError::OverLimit {
            what: LimitKind::FileBytes,
            ..
        }
    ));
    let coarse = gs[0].tokens.len() as u64;
    let err = tight(|l| l.max_tokens = 7);
    assert!(
        matches!(err, FormatError::OverLimit { what: LimitKind::Tokens, got, .. } if got == coarse + 24),
        "{err:?}"
    );
}

/// One set of defaults for the reader and `hvq-codec` (which re-exports this type): the values
/// `docs/format.md` §6 and the codec's docs quote.
#[test]
fn default_limits_are_the_documented_ones() {
    assert_eq!(
        Limits::default(),
        Limits {
            max_pixels: 1 << 26,
            max_file_bytes: 256 << 20,
            max_tokens: 1 << 26,
        }
    );
    let none = Limits::unlimited();
    assert_eq!(
        (none.max_pixels, none.max_file_bytes, none.max_tokens),
        (u64::MAX, u64::MAX, u64::MAX)
    );
}

#[test]
fn writer_refuses_bad_grids() {
    let (priors, hd, gs, _) = sample();
    let reversed = vec![gs[1].clone(), gs[0].clone()];
    assert!(matches!(
        write_file(&hd, &reversed, &priors),
        Err(FormatError::LevelOrder {
            previous: 0,
            level: 1,
            ..
        })
    ));
    let mut wrong = gs[0].clone();
    wrong.width += 1;
    assert!(matches!(
        write_file(&hd, &[wrong], &priors),
        Err(FormatError::GridSize { level: 1, .. })
    ));
    let mut short = gs[0].clone();
    short.tokens.pop();
    assert!(matches!(
        write_file(&hd, &[short], &priors),
        Err(FormatError::TokenCount { level: 1, .. })
    ));
    let mut big = gs[0].clone();
    big.tokens[3] = 32;
    assert_eq!(
        write_file(&hd, &[big], &priors),
        Err(FormatError::TokenOutOfRange {
            level: 1,
            index: 3,
            token: 32,
            codebook_size: 32
        })
    );
    let mut deep = gs[0].clone();
    deep.level = 2;
    assert!(matches!(
        write_file(&hd, &[deep], &priors),
        Err(FormatError::LevelOutOfRange {
            level: 2,
            model_levels: 2,
            ..
        })
    ));
}

#[test]
fn priors_survive_the_metadata_string_bit_exactly() {
    let priors = trained_priors(3, 20000, Dist::Skewed, 3);
    let s = priors.to_metadata_string();
    let back = Priors::from_metadata_string(&s).unwrap();
    assert_eq!(back.hash(), priors.hash());
    for l in 0..3 {
        assert_eq!(back.frequencies(l), priors.frequencies(l));
        assert_eq!(
            back.frequencies(l)
                .unwrap()
                .iter()
                .map(|&f| u64::from(f))
                .sum::<u64>(),
            1 << 24
        );
    }
    assert!(s.len() < 3 * 20000 * 4, "metadata string {} bytes", s.len());
    assert!(s.is_ascii());
}

#[test]
fn uniform_priors_cost_log2_n_bits_per_token() {
    let p = Priors::uniform(2, 1000).unwrap();
    for t in [0u32, 1, 999] {
        assert!((p.cost_bits(1, t).unwrap() - 1000f64.log2()).abs() < 1e-3);
    }
    assert_eq!(p.cost_bits(2, 0), None);
    assert_eq!(p.cost_bits(0, 1000), None);
}

#[test]
fn unseen_tokens_stay_codable() {
    let mut counts = vec![vec![0u64; 50]];
    counts[0][7] = u64::MAX / 2;
    let priors = Priors::from_counts(counts).unwrap();
    assert!(priors.frequencies(0).unwrap().iter().all(|&f| f >= 1));
    let hd = header(4, 4, 1, &priors);
    let g = TokenGrid {
        level: 0,
        height: 1,
        width: 1,
        tokens: vec![49],
    };
    let bytes = write_file(&hd, std::slice::from_ref(&g), &priors).unwrap();
    assert_eq!(
        read_file(&bytes, &priors, &Limits::default())
            .unwrap()
            .grids,
        vec![g]
    );
}

#[test]
fn malformed_priors_are_refused() {
    let bad = |fault| Err(FormatError::InvalidPriors { fault });
    assert_eq!(
        Priors::from_counts(vec![]).map(|p| p.hash()),
        bad(PriorsFault::LevelCount)
    );
    assert_eq!(
        Priors::from_counts(vec![vec![1; 4], vec![1; 5]]).map(|p| p.hash()),
        bad(PriorsFault::CodebookSize)
    );
    assert_eq!(
        Priors::uniform(1, 1).map(|p| p.hash()),
        bad(PriorsFault::CodebookSize)
    );
    assert_eq!(
        Priors::uniform(17, 4).map(|p| p.hash()),
        bad(PriorsFault::LevelCount)
    );
    let good = Priors::uniform(2, 8).unwrap().to_metadata_string();
    assert_eq!(
        Priors::from_metadata_string("hvqp0:AA").map(|p| p.hash()),
        bad(PriorsFault::Tag)
    );
    assert_eq!(
        Priors::from_metadata_string("hvqp1:!!").map(|p| p.hash()),
        bad(PriorsFault::Base64)
    );
    assert_eq!(
        Priors::from_metadata_string(&good[..good.len() - 3]).map(|p| p.hash()),
        bad(PriorsFault::Varint)
    );
    // A hostile header claiming 16 levels of 2^20 tokens in a few bytes is refused before allocation.
    assert_eq!(
        Priors::from_metadata_string("hvqp1:EICAQA").map(|p| p.hash()),
        bad(PriorsFault::Varint)
    );
    // Every prefix of a valid string is an error, never a panic.
    for len in 0..good.len() {
        assert!(Priors::from_metadata_string(&good[..len]).is_err());
    }
}
