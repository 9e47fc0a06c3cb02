//! Committed test vectors: `.hvq` files with their expected header and tokens in JSON beside them.
//! A change of the byte layout, the coder or the priors quantization fails here loudly.
//!
//! Regenerate (only after a deliberate format change, with a version bump):
//! `HVQ_REGENERATE_VECTORS=1 cargo test -p hvq-format --test vectors`

mod common;

use std::path::PathBuf;

use hvq_format::{ContextModel, Header, Limits, Priors, TokenGrid, read_file, write_file};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Grid {
    level: usize,
    height: usize,
    width: usize,
    tokens: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Expected {
    width: u32,
    height: u32,
    fingerprint_hex: String,
    model_levels: u8,
    coarsest_stride: u32,
    priors_hash_hex: String,
    /// `Priors::to_metadata_string` of the priors that decode the file.
    priors: String,
    /// `ContextModel::to_metadata_string` of their context model (coding 2), if they have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    truncated_tail: bool,
    /// Each complete chunk's coding (docs/format.md §4): 0 unconditional, 1 parent, 2 context.
    codings: Vec<u8>,
    grids: Vec<Grid>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Builds each vector from fixed inputs: (name, file bytes, expected).
fn generate() -> Vec<(&'static str, Vec<u8>, Expected)> {
    let mut out = Vec::new();
    // 1. One level, uniform priors over 16 tokens, a 10×7 image at stride 4: a 2×3 grid.
    let p1 = Priors::uniform(1, 16).unwrap();
    let h1 = Header {
        width: 10,
        height: 7,
        fingerprint: [0x11; 32],
        model_levels: 1,
        coarsest_stride: 4,
        priors_hash: p1.hash(),
    };
    let g1 = vec![TokenGrid {
        level: 0,
        height: 2,
        width: 3,
        tokens: vec![0, 15, 7, 3, 3, 9],
    }];
    out.push((
        "uniform-1level",
        write_file(&h1, &g1, &p1).unwrap(),
        expected(&h1, &p1, &g1, false, vec![0]),
    ));

    // 2. Three levels, priors from counts 64 - t over 64 tokens, a 40×24 image at strides 4/8/16;
    //    finer tokens copy their parent 70% of the time, so levels 1 and 0 are parent-coded.
    let p2 = Priors::from_counts(
        (0..3)
            .map(|_| (0..64u64).map(|t| 64 - t).collect())
            .collect(),
    )
    .unwrap();
    let h2 = Header {
        width: 40,
        height: 24,
        fingerprint: hvq_spec_like_fingerprint(),
        model_levels: 3,
        coarsest_stride: 16,
        priors_hash: p2.hash(),
    };
    let mut rng = common::rng(2024);
    let mut g2: Vec<TokenGrid> = Vec::new();
    for level in (0..3).rev() {
        let (h, w) = h2.grid_dims(level).unwrap();
        let (h, w) = (h as usize, w as usize);
        let tokens = (0..h * w)
            .map(|i| match g2.last() {
                Some(p) if rng.gen_bool(0.7) => p.tokens[(i / w / 2) * p.width + (i % w) / 2],
                _ => (rng.gen_range(0.0f64..1.0).powi(2) * 64.0) as u32,
            })
            .collect();
        g2.push(TokenGrid {
            level,
            height: h,
            width: w,
            tokens,
        });
    }
    let b2 = write_file(&h2, &g2, &p2).unwrap();
    out.push((
        "skewed-3level",
        b2.clone(),
        expected(&h2, &p2, &g2, false, vec![0, 1, 1]),
    ));

    // 3. A progressive prefix of vector 2: its first two chunks and half of the third.
    let bounds = common::chunk_boundaries(&b2);
    let cut = (bounds[2] + bounds[3]) / 2;
    out.push((
        "skewed-3level-prefix",
        b2[..cut].to_vec(),
        expected(&h2, &p2, &g2[..2], true, vec![0, 1]),
    ));

    // 4. Three levels with a context model (8 neighbours per entry on a line of 64 entries) fitted
    //    on other smooth grids; this image's tokens are smooth too, so the two finer chunks are
    //    context-coded (the coarsest, 6 tokens without a parent, is smaller unconditional).
    let p4 = common::context_priors(3, 64, 8, 31);
    let h4 = Header {
        width: 40,
        height: 24,
        fingerprint: hvq_spec_like_fingerprint(),
        model_levels: 3,
        coarsest_stride: 16,
        priors_hash: p4.hash(),
    };
    let g4 = common::smooth_grids(&h4, 64, 4242);
    out.push((
        "context-3level",
        write_file(&h4, &g4, &p4).unwrap(),
        expected(&h4, &p4, &g4, false, vec![0, 2, 2]),
    ));
    out
}

fn hvq_spec_like_fingerprint() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn expected(
    h: &Header,
    p: &Priors,
    grids: &[TokenGrid],
    truncated_tail: bool,
    codings: Vec<u8>,
) -> Expected {
    Expected {
        width: h.width,
        height: h.height,
        fingerprint_hex: hex(&h.fingerprint),
        model_levels: h.model_levels,
        coarsest_stride: h.coarsest_stride,
        priors_hash_hex: format!("{:016x}", h.priors_hash),
        priors: p.to_metadata_string(),
        context: p.context().map(|c| c.to_metadata_string()),
        truncated_tail,
        codings,
        grids: grids
            .iter()
            .map(|g| Grid {
                level: g.level,
                height: g.height,
                width: g.width,
                tokens: g.tokens.clone(),
            })
            .collect(),
    }
}

#[test]
fn committed_vectors_decode_to_their_expected_tokens() {
    let vectors = generate();
    if std::env::var_os("HVQ_REGENERATE_VECTORS").is_some() {
        for (name, bytes, exp) in &vectors {
            std::fs::write(dir().join(format!("{name}.hvq")), bytes).unwrap();
            std::fs::write(
                dir().join(format!("{name}.json")),
                serde_json::to_string_pretty(exp).unwrap() + "\n",
            )
            .unwrap();
        }
    }
    for (name, generated, _) in &vectors {
        // A missing file fails: the vectors must be committed.
        let bytes = std::fs::read(dir().join(format!("{name}.hvq")))
            .unwrap_or_else(|e| panic!("{name}.hvq: {e}"));
        let json = std::fs::read_to_string(dir().join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name}.json: {e}"));
        let exp: Expected = serde_json::from_str(&json).unwrap();
        let mut priors = Priors::from_metadata_string(&exp.priors).unwrap();
        if let Some(c) = &exp.context {
            priors = priors
                .with_context(ContextModel::from_metadata_string(c).unwrap())
                .unwrap();
        }
        assert_eq!(
            format!("{:016x}", priors.hash()),
            exp.priors_hash_hex,
            "{name}: priors hash"
        );
        let file = read_file(&bytes, &priors, &Limits::default()).unwrap();
        let codings = file
            .chunks
            .iter()
            .map(|c| 2 * u8::from(c.context_coded) + u8::from(c.parent_coded))
            .collect();
        assert_eq!(
            expected(
                &file.header,
                &priors,
                &file.grids,
                file.truncated_tail,
                codings
            ),
            exp,
            "{name}: decoded"
        );
        // The writer is deterministic and still produces the committed bytes.
        assert_eq!(&bytes, generated, "{name}: writer output changed");
    }
}
