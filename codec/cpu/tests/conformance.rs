//! The CPU backend against libtorch's conformance vectors (`tests/vectors`, written by
//! `hvq-train export-vectors`; see its README): latents, tokens and decoded pixels.

use std::path::{Path, PathBuf};

use hvq_cpu::{CpuModel, ops};
use hvq_spec::{FeatureMap, TokenGrid, WeightLimits, Weights, fingerprint_hex};
use safetensors::{Dtype, SafeTensors};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

/// One case of the manifest.
struct Case {
    case: String,
    weights: String,
    fingerprint: String,
    height: usize,
    width: usize,
    levels: usize,
}

fn manifest(dir: &Path) -> Option<Vec<Case>> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).expect("manifest.json parses");
    let cases = json["cases"].as_array().expect("manifest has `cases`");
    let s = |c: &serde_json::Value, k: &str| {
        c[k].as_str()
            .unwrap_or_else(|| panic!("case lacks `{k}`"))
            .to_string()
    };
    let n = |c: &serde_json::Value, k: &str| {
        c[k].as_u64().unwrap_or_else(|| panic!("case lacks `{k}`")) as usize
    };
    Some(
        cases
            .iter()
            .map(|c| Case {
                case: s(c, "case"),
                weights: s(c, "weights"),
                fingerprint: s(c, "fingerprint"),
                height: n(c, "height"),
                width: n(c, "width"),
                levels: n(c, "levels"),
            })
            .collect(),
    )
}

/// A tensor of a case file as f32 values (u8, i32 and f32 are what the vectors hold).
fn values(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("vector lacks `{name}`: {e}"));
    let d = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::U8 => d.iter().map(|&b| b as f32).collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        other => panic!("`{name}` has unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), v)
}

fn map_of(shape: &[usize], data: Vec<f32>) -> FeatureMap {
    FeatureMap {
        channels: shape[0],
        height: shape[1],
        width: shape[2],
        data,
    }
}

/// Squared distance in f64 from position `pos` of `p` to codebook row `code`.
fn distance(p: &FeatureMap, pos: usize, codebook: &[f32], code: usize) -> f64 {
    let d = p.channels;
    (0..d)
        .map(|c| (p.data[c * p.plane() + pos] as f64 - codebook[code * d + c] as f64).powi(2))
        .sum()
}

/// Totals over all cases, for the report line.
#[derive(Default)]
struct Tally {
    tokens: usize,
    agreeing: usize,
    worst_latent_rel: f64,
    worst_pixel: f32,
}

fn check_case(dir: &Path, case: &Case, tally: &mut Tally) {
    let weights = Weights::from_safetensors(
        &std::fs::read(dir.join(&case.weights)).unwrap(),
        &WeightLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.weights));
    assert_eq!(
        fingerprint_hex(&weights.fingerprint()),
        case.fingerprint,
        "{}: fingerprint",
        case.case
    );
    let model = CpuModel::new(weights);
    let bytes = std::fs::read(dir.join(&case.case)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, pixels) = values(&st, "input");
    let image = map_of(&shape, pixels.into_iter().map(|v| v / 255.0).collect());
    let padded = ops::pad_edge(&image, model.config().coarsest_stride()).unwrap();
    let latents = model.encode_latents(&padded).unwrap();
    assert_eq!(latents.len(), case.levels);
    let codebook = &model.weights().tensor("quantizer.codebook").data;
    for (level, ours) in latents.iter().enumerate() {
        let (shape, data) = values(&st, &format!("latent.{level}"));
        let theirs = map_of(&shape, data);
        check_latent(case, level, ours, &theirs, tally);
        let (_, tok) = values(&st, &format!("tokens.{level}"));
        let their_tokens: Vec<u32> = tok.iter().map(|&t| t as u32).collect();
        check_tokens(case, level, ours, &theirs, &their_tokens, codebook, tally);
        let grid = TokenGrid {
            level,
            height: theirs.height,
            width: theirs.width,
            tokens: their_tokens,
        };
        check_decoded(&st, case, &model, &grid, tally);
    }
}

fn check_latent(
    case: &Case,
    level: usize,
    ours: &FeatureMap,
    theirs: &FeatureMap,
    tally: &mut Tally,
) {
    assert_eq!(
        (ours.channels, ours.height, ours.width),
        (theirs.channels, theirs.height, theirs.width)
    );
    let scale = theirs.data.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let worst = ours
        .data
        .iter()
        .zip(&theirs.data)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    let rel = worst / scale.max(1e-6);
    tally.worst_latent_rel = tally.worst_latent_rel.max(rel);
    // Both sides are f32 with different summation orders (GEMM blocking, Winograd transforms,
    // oneDNN kernels) through ~15 layers: differences of ~1e-6 of the latent scale are
    // rounding; a wrong op or index moves values by ~1e-1.
    assert!(
        rel < 1e-4,
        "{} latent {level}: max diff {worst} vs scale {scale}",
        case.case
    );
}

fn check_tokens(
    case: &Case,
    level: usize,
    ours: &FeatureMap,
    theirs: &FeatureMap,
    their_tokens: &[u32],
    codebook: &[f32],
    tally: &mut Tally,
) {
    let our_tokens = ops::nearest_codes(
        ours,
        &hvq_spec::Tensor {
            shape: vec![codebook.len() / ours.channels, ours.channels],
            data: codebook.to_vec(),
        },
    )
    .unwrap();
    assert_eq!(our_tokens.len(), their_tokens.len());
    for (pos, (&a, &b)) in our_tokens.iter().zip(their_tokens).enumerate() {
        tally.tokens += 1;
        if a == b {
            tally.agreeing += 1;
            continue;
        }
        // A flip is only acceptable between two entries libtorch's own latent finds (nearly)
        // equidistant: the latents agree to ~1e-6 relative, so distances differ by about
        // 1e-5 of their size at most.
        let (da, db) = (
            distance(theirs, pos, codebook, a as usize),
            distance(theirs, pos, codebook, b as usize),
        );
        assert!(
            (da - db).abs() <= 1e-4 * (1.0 + da.max(db)),
            "{} level {level} position {pos}: token {a} (distance {da}) vs libtorch's {b} (distance {db}) is not a near-tie",
            case.case
        );
    }
}

fn check_decoded(
    st: &SafeTensors<'_>,
    case: &Case,
    model: &CpuModel,
    grid: &TokenGrid,
    tally: &mut Tally,
) {
    let rgb = model.decode(grid).unwrap();
    let rgb = ops::crop(&rgb, case.height, case.width).unwrap();
    let (shape, data) = values(st, &format!("decoded.{}", grid.level));
    let theirs = map_of(&shape, data);
    assert_eq!(
        (rgb.channels, rgb.height, rgb.width),
        (theirs.channels, theirs.height, theirs.width)
    );
    let worst = rgb
        .data
        .iter()
        .zip(&theirs.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    tally.worst_pixel = tally.worst_pixel.max(worst);
    // Same tokens in, so only float summation order differs: pixels in [0, 1] agree to ~1e-6;
    // 1e-3 (a quarter of one 8-bit step) still means identical 8-bit output almost everywhere.
    assert!(
        worst <= 1e-3,
        "{} decoded level {}: max abs diff {worst}",
        case.case,
        grid.level
    );
}

#[test]
fn cpu_backend_reproduces_libtorch_vectors() {
    let dir = vectors_dir();
    let Some(cases) = manifest(&dir) else {
        eprintln!(
            "\n!!! SKIPPED: no conformance vectors at {} — run `cargo run -p hvq-train -- export-vectors --out tests/vectors` !!!\n",
            dir.display()
        );
        return;
    };
    assert!(!cases.is_empty(), "manifest lists no cases");
    let mut tally = Tally::default();
    for case in &cases {
        check_case(&dir, case, &mut tally);
    }
    eprintln!(
        "conformance: {} cases, token agreement {}/{} ({:.3}%), worst latent diff {:.2e} of scale, worst pixel diff {:.2e}",
        cases.len(),
        tally.agreeing,
        tally.tokens,
        100.0 * tally.agreeing as f64 / tally.tokens as f64,
        tally.worst_latent_rel,
        tally.worst_pixel
    );
}
