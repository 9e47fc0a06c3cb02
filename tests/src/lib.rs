//! # hvq-tests
//!
//! Cross-crate tests live in `tests/tests/`: the libtorch conformance vectors of `tests/vectors/`
//! (written by `hvq-train export-vectors`) checked end to end through the public `hvq_codec::Codec`
//! API, from u8 pixels to `.hvq` bytes and back.
//!
//! The library is the one loader of those vectors, used by every conformance test (this crate's,
//! `hvq-cpu`'s and `hvq-wgpu`'s, which take it as a dev-dependency: it depends on no backend).
//! The vectors are committed files, so a missing or incomplete one fails, never skips:
//! [`Vectors::load`] reads the manifest and every file it names, checks that each case holds every
//! tensor of `tests/vectors/README.md` with its dtype and shape, and panics naming what is wrong.
//!
//! ```
//! for case in hvq_tests::Vectors::load().cases() {
//!     for l in 0..case.levels {
//!         assert_eq!(case.tokens(l).tokens.len(), case.latent(l).plane());
//!     }
//! }
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use hvq_spec::{FeatureMap, StoreDtype, Strategy, TokenGrid, WeightLimits, Weights};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

/// The conformance vectors: the manifest's cases with their files read and checked.
pub struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

impl Vectors {
    /// The committed vectors of `tests/vectors/`, found from this crate's own directory (so from
    /// any crate's tests).
    ///
    /// # Panics
    ///
    /// If `manifest.json` or a file it names is missing or malformed, naming it.
    pub fn load() -> Self {
        Self::load_from(Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors"))
    }

    /// The vectors of another directory with the same layout; panics as [`Vectors::load`].
    pub fn load_from(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "conformance vectors: cannot read {} ({e}); the vectors are committed files \
                 (regenerate with `cargo run -p hvq-train -- export-vectors --out tests/vectors`)",
                path.display()
            )
        });
        let Manifest { mut cases } = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("conformance vectors: {} is malformed: {e}", path.display())
        });
        assert!(!cases.is_empty(), "{} lists no case", path.display());
        cases.iter_mut().for_each(|case| case.read(&dir));
        Vectors { cases }
    }

    /// Every case of the manifest, in its order (never empty).
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }
}

/// One case: a model's weights, a u8 input image and libtorch's outputs for it, level by level.
/// The public fields are the manifest entry's.
#[derive(Debug, Deserialize)]
pub struct Case {
    /// Model name (`tiny`, `tiny-sampling`, …).
    pub model: String,
    /// File name of the weights (`<model>.safetensors`).
    pub weights: String,
    /// Storage precision of the weight file.
    #[serde(deserialize_with = "store_dtype")]
    pub weights_dtype: StoreDtype,
    /// File name of the case (`<model>.<image>.safetensors`); names the case in messages.
    pub case: String,
    /// Name of the generated image (`pattern37x29`, …).
    pub image: String,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// The model's level count; the per-level accessors take `0..levels`.
    pub levels: usize,
    /// The model's level strategy.
    pub strategy: Strategy,
    /// `(height, width)` of each level's token grid, finest first.
    pub token_grids_hw: Vec<(usize, usize)>,
    /// The model fingerprint as hex (`hvq_spec::fingerprint_hex`).
    pub fingerprint: String,
    #[serde(skip)]
    weight_bytes: Vec<u8>,
    #[serde(skip)]
    input: Vec<u8>,
    #[serde(skip)]
    latents: Vec<FeatureMap>,
    #[serde(skip)]
    tokens: Vec<TokenGrid>,
    #[serde(skip)]
    decoded: Vec<FeatureMap>,
}

fn store_dtype<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StoreDtype, D::Error> {
    match String::deserialize(d)?.as_str() {
        "f32" => Ok(StoreDtype::F32),
        "f16" => Ok(StoreDtype::F16),
        other => Err(serde::de::Error::custom(format!("weights_dtype `{other}`"))),
    }
}

impl Case {
    /// Reads the files the entry names and checks every tensor's dtype and shape.
    fn read(&mut self, dir: &Path) {
        let name = self.case.clone();
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).unwrap_or_else(|e| {
                let path = path.display();
                panic!("conformance vectors: cannot read {path} ({e}), named by case `{name}`")
            })
        };
        let levels = self.token_grids_hw.len();
        assert_eq!(levels, self.levels, "{name}: token_grids_hw per level");
        self.weight_bytes = read(&self.weights);
        let bytes = read(&self.case);
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tensor = |t: &str, dtype: Dtype, shape: &[usize]| {
            let v = (st.tensor(t)).unwrap_or_else(|e| panic!("{name}: vector lacks `{t}`: {e}"));
            assert_eq!(v.dtype(), dtype, "{name}: dtype of `{t}`");
            // A latent's channel count (0 here) is the codebook's, which the manifest lacks.
            let skip = usize::from(shape[0] == 0);
            assert_eq!(v.shape()[skip..], shape[skip..], "{name}: shape of `{t}`");
            (v.shape().to_vec(), v.data())
        };
        let map = |t: &str, shape: &[usize]| {
            let (s, d) = tensor(t, Dtype::F32, shape);
            let mut map = FeatureMap::zeros(s[0], s[1], s[2]);
            map.data = words(d).map(f32::from_le_bytes).collect();
            map
        };
        let image = [3, self.height, self.width];
        self.input = tensor("input", Dtype::U8, &image).1.to_vec();
        for (level, &(height, width)) in self.token_grids_hw.iter().enumerate() {
            self.latents
                .push(map(&format!("latent.{level}"), &[0, height, width]));
            let (_, d) = tensor(&format!("tokens.{level}"), Dtype::I32, &[height, width]);
            let tokens = words(d).map(|b| u32::try_from(i32::from_le_bytes(b)).expect("token ≥ 0"));
            let tokens = tokens.collect();
            self.tokens.push(TokenGrid {
                level,
                height,
                width,
                tokens,
            });
            self.decoded.push(map(&format!("decoded.{level}"), &image));
        }
    }

    /// The weight file's bytes.
    pub fn weight_bytes(&self) -> &[u8] {
        &self.weight_bytes
    }

    /// The weights, parsed with the default limits (panics if they do not load).
    pub fn weights(&self) -> Weights {
        Weights::from_safetensors(&self.weight_bytes, &WeightLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", self.weights))
    }

    /// The input image, planar u8 `[3, height, width]`.
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// The input image as interleaved RGB8 (`hvq_codec::RgbImage`'s layout).
    pub fn input_rgb8(&self) -> Vec<u8> {
        let (p, n) = (&self.input, self.width * self.height);
        (0..n)
            .flat_map(|i| [p[i], p[n + i], p[2 * n + i]])
            .collect()
    }

    /// The input image in `[0, 1]` (`u8 / 255`), `[3, height, width]`: the model's first step.
    pub fn input_map(&self) -> FeatureMap {
        let mut map = FeatureMap::zeros(3, self.height, self.width);
        map.data = self.input.iter().map(|&b| f32::from(b) / 255.0).collect();
        map
    }

    /// libtorch's projected latent of `level`, `[D, h, w]`, before quantization.
    pub fn latent(&self, level: usize) -> &FeatureMap {
        &self.latents[level]
    }

    /// libtorch's nearest-entry tokens of `level` (squared L2, ties to the lowest index).
    pub fn tokens(&self, level: usize) -> &TokenGrid {
        &self.tokens[level]
    }

    /// libtorch's decoded image of `level` from [`Case::tokens`], in `[0, 1]`, cropped to
    /// `[3, height, width]`.
    pub fn decoded(&self, level: usize) -> &FeatureMap {
        &self.decoded[level]
    }
}

/// Little-endian 4-byte words of a tensor's data.
fn words(data: &[u8]) -> impl Iterator<Item = [u8; 4]> + '_ {
    data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]])
}

/// The largest `|a − b|` over two slices, which must be equally long.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    let diffs = a.iter().zip(b).map(|(x, y)| (x - y).abs());
    diffs.fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_vectors_agree_with_their_weights() {
        for case in Vectors::load().cases() {
            let weights = case.weights();
            let cfg = weights.config();
            let fingerprint = hvq_spec::fingerprint_hex(&weights.fingerprint());
            assert_eq!((cfg.levels, cfg.strategy), (case.levels, case.strategy));
            assert_eq!(fingerprint, case.fingerprint, "{}", case.case);
            let st = SafeTensors::deserialize(case.weight_bytes()).unwrap();
            let dtype = st.tensor("quantizer.codebook").unwrap().dtype();
            assert_eq!(dtype == Dtype::F16, case.weights_dtype == StoreDtype::F16);
            for l in 0..case.levels {
                assert_eq!(case.latent(l).channels, cfg.codebook_dim, "{}", case.case);
            }
            let plane = case.width * case.height;
            assert_eq!(case.input_rgb8()[3 * 5 + 1], case.input()[plane + 5]);
        }
    }

    #[test]
    #[should_panic(expected = "manifest.json")]
    fn a_missing_manifest_fails_naming_it() {
        Vectors::load_from(std::env::temp_dir().join("hvq-tests-no-such-vectors"));
    }

    #[test]
    #[should_panic(expected = "no-such-weights.safetensors")]
    fn a_missing_named_file_fails_naming_it() {
        let dir = std::env::temp_dir().join("hvq-tests-missing-file");
        std::fs::create_dir_all(&dir).unwrap();
        let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/manifest.json");
        let manifest = std::fs::read_to_string(real).unwrap();
        let manifest = manifest.replace("\"tiny.safetensors", "\"no-such-weights.safetensors");
        std::fs::write(dir.join("manifest.json"), manifest).unwrap();
        Vectors::load_from(&dir);
    }
}
