//! Rate–distortion encoding ([`crate::CodecBuilder::rate_distortion`]): the backend gives the latents,
//! the CPU finds each position's [`RD_CANDIDATES`] nearest codebook entries, measures how far each is
//! in the metric of the level's decoder ([`DecoderMetric`]), and
//! [`hvq_format::choose_levels`] picks among them for every level jointly (coarsest first, so that
//! each finer level sees the parent tokens the file will hold, then a sweep in which coarse tokens
//! also weigh their children's bits).

use hvq_format::{Candidates, LevelCandidates, choose_levels};
use hvq_spec::{FeatureMap, Tensor, TokenGrid, Weights};

use crate::codec::paste_rows;
use crate::tiling;
use crate::{Codec, CodecError, Progress, Result, RgbImage, Tokens};

/// Codebook entries considered per position. With the embedded model, 4 keeps well under half of the
/// gain of 16 at λ = 0.3 (`docs/results/rate-distortion.md`); more than 16 was not measured.
pub const RD_CANDIDATES: usize = 16;

/// What a rate–distortion encode needs beyond the engine: the weight, the codebook and each level's
/// decoder metric.
#[derive(Debug)]
pub(crate) struct RateDistortion {
    lambda: f64,
    codebook: Tensor,
    /// Indexed by level.
    metrics: Vec<DecoderMetric>,
}

fn tensor<'a>(weights: &'a Weights, name: &str) -> Result<&'a Tensor> {
    weights.get(name).ok_or_else(|| {
        CodecError::Weights(hvq_spec::SpecError::MissingTensor {
            tensor: name.into(),
        })
    })
}

impl RateDistortion {
    pub(crate) fn new(weights: &Weights, lambda: f64) -> Result<RateDistortion> {
        let codebook = tensor(weights, "quantizer.codebook")?.clone();
        let metrics = (0..weights.config().levels)
            .map(|level| {
                let name = format!("decoders.{level}.conv_in.weight");
                DecoderMetric::new(tensor(weights, &name)?, &codebook, &name)
            })
            .collect::<Result<_>>()?;
        Ok(RateDistortion {
            lambda,
            codebook,
            metrics,
        })
    }

    pub(crate) fn lambda(&self) -> f64 {
        self.lambda
    }
}

/// One level's candidates for the whole padded image.
struct CandidateBuffers {
    level: usize,
    height: usize,
    width: usize,
    codes: Vec<u32>,
    distances: Vec<f32>,
}

impl Codec {
    /// [`Codec::encode_levels`] with rate–distortion token choice.
    pub(crate) async fn encode_levels_rd(
        &self,
        rd: &RateDistortion,
        image: &RgbImage,
        levels: &[usize],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Tokens> {
        let (w, h) = self.padded_size(image.width(), image.height())?;
        let plan = self.plan_for(w, h);
        let k = RD_CANDIDATES.min(self.config().codebook_size);
        let mut all: Vec<CandidateBuffers> = self
            .empty_grids(levels, w, h)
            .into_iter()
            .map(|g| CandidateBuffers {
                level: g.level,
                height: g.height,
                width: g.width,
                codes: vec![0; g.tokens.len() * k],
                distances: vec![0.0; g.tokens.len() * k],
            })
            .collect();
        let total = plan.tiles();
        for (j, ys) in plan.ys.iter().enumerate() {
            for (i, xs) in plan.xs.iter().enumerate() {
                let map = tiling::input_map(image, xs.input, ys.input);
                let latents = self.engine.latents(&map).await?;
                drop(map);
                for c in &mut all {
                    let p = &latents[c.level];
                    let (mut codes, mut distances) =
                        hvq_cpu::ops::nearest_k_codes(p, &rd.codebook, k)
                            .map_err(CodecError::Cpu)?;
                    rd.metrics[c.level].measure(p, &rd.codebook, &mut codes, &mut distances);
                    let f = self.config().level_stride(c.level);
                    let spans = (xs, ys);
                    paste_rows(&mut c.codes, c.width, &codes, p.width, spans, (f, k));
                    paste_rows(
                        &mut c.distances,
                        c.width,
                        &distances,
                        p.width,
                        spans,
                        (f, k),
                    );
                }
                progress(Progress {
                    done: j * plan.xs.len() + i + 1,
                    total,
                });
            }
        }
        let levels: Vec<LevelCandidates<'_>> = all
            .iter()
            .map(|c| LevelCandidates {
                level: c.level,
                candidates: Candidates {
                    height: c.height,
                    width: c.width,
                    k,
                    codes: &c.codes,
                    distances: &c.distances,
                },
            })
            .collect();
        let chosen =
            choose_levels(self.priors(), &levels, rd.lambda).map_err(CodecError::Format)?;
        let grids = all
            .iter()
            .zip(chosen)
            .map(|(c, tokens)| TokenGrid {
                level: c.level,
                height: c.height,
                width: c.width,
                tokens,
            })
            .collect();
        Ok(Tokens {
            width: image.width(),
            height: image.height(),
            grids,
        })
    }
}

/// How much a level's decoder sees of a move in latent space: the squared distance
/// `(e − p)ᵀ M (e − p)` with `M = Σ_taps Wᵀ W` over the taps of the decoder's first convolution
/// `conv_in` (`W`: output channels × codebook dim), scaled so that the mean eigenvalue of `M` is 1.
/// It is the energy that the move of one position puts into the first layer's outputs, so among
/// candidates at the same plain distance it prefers those whose difference the decoder amplifies
/// least. Measured with the embedded model on 8 Kodak images, it gives 0.01–0.03 dB more at the same
/// rate than plain squared distances (`docs/results/rate-distortion.md`); the candidates are still the
/// plain nearest entries, so the quantizer's own choice stays among them.
#[derive(Debug)]
struct DecoderMetric {
    dim: usize,
    /// `M`, `dim × dim`, row-major.
    m: Vec<f64>,
    /// `eᵀ M e` for every codebook entry.
    entry_norms: Vec<f64>,
}

impl DecoderMetric {
    fn new(conv_in: &Tensor, codebook: &Tensor, name: &str) -> Result<DecoderMetric> {
        let dim = codebook.shape.get(1).copied().unwrap_or(0);
        let [out, d, kh, kw] = conv_in.shape[..] else {
            return Err(shape_error(name, conv_in, dim));
        };
        if d != dim || dim == 0 || !codebook.data.len().is_multiple_of(dim) {
            return Err(shape_error(name, conv_in, dim));
        }
        let taps = kh * kw;
        let mut m = vec![0f64; dim * dim];
        let mut column = vec![0f64; dim];
        for o in 0..out {
            for t in 0..taps {
                for (a, c) in column.iter_mut().enumerate() {
                    *c = f64::from(conv_in.data[(o * dim + a) * taps + t]);
                }
                for a in 0..dim {
                    for b in 0..dim {
                        m[a * dim + b] += column[a] * column[b];
                    }
                }
            }
        }
        // Scale-free: λ keeps the units of a plain squared distance. A decoder whose first layer is
        // all zeros (never trained) falls back to the plain distance.
        let mean_eigen = (0..dim).map(|a| m[a * dim + a]).sum::<f64>() / dim as f64;
        if mean_eigen > 0.0 && mean_eigen.is_finite() {
            m.iter_mut().for_each(|v| *v /= mean_eigen);
        } else {
            m = (0..dim * dim)
                .map(|i| f64::from(u8::from(i / dim == i % dim)))
                .collect();
        }
        let mut metric = DecoderMetric {
            dim,
            m,
            entry_norms: Vec::new(),
        };
        let mut e = vec![0f64; dim];
        metric.entry_norms = codebook
            .data
            .chunks_exact(dim)
            .map(|row| {
                e.iter_mut().zip(row).for_each(|(x, &v)| *x = f64::from(v));
                metric.quadratic(&e)
            })
            .collect();
        Ok(metric)
    }

    /// `xᵀ M x`.
    fn quadratic(&self, x: &[f64]) -> f64 {
        let mut mx = vec![0f64; self.dim];
        self.apply(x, &mut mx);
        dot(x, &mx)
    }

    /// `out = M x`.
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        for (row, o) in self.m.chunks_exact(self.dim).zip(out) {
            *o = dot(row, x);
        }
    }

    /// Replaces each candidate's plain squared distance to the latent (`p`: `dim` channels) by its
    /// distance in this metric, `eᵀMe − 2 eᵀMp + pᵀMp`, then re-sorts each position's candidates,
    /// nearest first (ties: the plain order).
    fn measure(&self, p: &FeatureMap, codebook: &Tensor, codes: &mut [u32], distances: &mut [f32]) {
        let (dim, plane) = (self.dim, p.plane());
        let k = codes.len() / plane.max(1);
        let (mut latent, mut mp) = (vec![0f64; dim], vec![0f64; dim]);
        let mut order: Vec<(f32, u32)> = Vec::with_capacity(k);
        for i in 0..plane {
            for (c, l) in latent.iter_mut().enumerate() {
                *l = f64::from(p.data[c * plane + i]);
            }
            self.apply(&latent, &mut mp);
            let pmp = dot(&latent, &mp);
            order.clear();
            for &code in &codes[i * k..(i + 1) * k] {
                let e = &codebook.data[code as usize * dim..(code as usize + 1) * dim];
                let emp: f64 = e.iter().zip(&mp).map(|(&a, &b)| f64::from(a) * b).sum();
                let d = (self.entry_norms[code as usize] - 2.0 * emp + pmp).max(0.0);
                order.push((d as f32, code));
            }
            order.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (j, &(d, code)) in order.iter().enumerate() {
                codes[i * k + j] = code;
                distances[i * k + j] = d;
            }
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn shape_error(name: &str, got: &Tensor, dim: usize) -> CodecError {
    CodecError::Weights(hvq_spec::SpecError::ShapeMismatch {
        tensor: name.into(),
        expected: vec![got.shape.first().copied().unwrap_or(0), dim, 3, 3],
        got: got.shape.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn tensor(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor { shape, data }
    }

    /// Every position's candidates: all `n` entries, in index order, with plain distances.
    fn all_entries(p: &FeatureMap, codebook: &Tensor) -> (Vec<u32>, Vec<f32>) {
        let (n, d, plane) = (codebook.shape[0], codebook.shape[1], p.plane());
        let mut codes = Vec::new();
        let mut distances = Vec::new();
        for i in 0..plane {
            for c in 0..n {
                codes.push(c as u32);
                distances.push(
                    (0..d)
                        .map(|ch| (codebook.data[c * d + ch] - p.data[ch * plane + i]).powi(2))
                        .sum(),
                );
            }
        }
        (codes, distances)
    }

    #[test]
    fn distances_are_the_first_layer_energy_of_the_move_scaled_and_sorted() {
        let (out, dim, n) = (5, 3, 7);
        let conv = tensor(vec![out, dim, 3, 3], values(out * dim * 9, 1));
        let codebook = tensor(vec![n, dim], values(n * dim, 2));
        let p = FeatureMap {
            channels: dim,
            height: 2,
            width: 3,
            data: values(dim * 6, 3),
        };
        let metric = DecoderMetric::new(&conv, &codebook, "conv").unwrap();
        let (mut codes, mut distances) = all_entries(&p, &codebook);
        metric.measure(&p, &codebook, &mut codes, &mut distances);
        // Brute force: Σ over outputs and taps of (W · (e − p))², over the mean eigenvalue of M
        // (trace / dim = Σ W² / dim).
        let scale = conv.data.iter().map(|&w| f64::from(w).powi(2)).sum::<f64>() / dim as f64;
        for i in 0..6 {
            let row = &codes[i * n..(i + 1) * n];
            let mut seen = row.to_vec();
            seen.sort_unstable();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "a permutation");
            for (j, &c) in row.iter().enumerate() {
                let delta: Vec<f64> = (0..dim)
                    .map(|ch| {
                        f64::from(codebook.data[c as usize * dim + ch])
                            - f64::from(p.data[ch * 6 + i])
                    })
                    .collect();
                let energy: f64 = (0..out)
                    .flat_map(|o| (0..9).map(move |t| (o, t)))
                    .map(|(o, t)| {
                        (0..dim)
                            .map(|a| f64::from(conv.data[(o * dim + a) * 9 + t]) * delta[a])
                            .sum::<f64>()
                            .powi(2)
                    })
                    .sum();
                let got = f64::from(distances[i * n + j]);
                assert!(
                    (got - energy / scale).abs() < 1e-5 * (1.0 + got),
                    "position {i}, entry {c}: {got} against {}",
                    energy / scale
                );
                if j > 0 {
                    assert!(distances[i * n + j - 1] <= distances[i * n + j], "sorted");
                }
            }
        }
    }

    #[test]
    fn an_isotropic_or_untrained_first_layer_keeps_plain_distances() {
        let (dim, n) = (4, 9);
        let codebook = tensor(vec![n, dim], values(n * dim, 4));
        let p = FeatureMap {
            channels: dim,
            height: 3,
            width: 2,
            data: values(dim * 6, 5),
        };
        // Identity on the centre tap (as many outputs as inputs and two more that are zero), and
        // an all-zero layer.
        let mut identity = vec![0f32; (dim + 2) * dim * 9];
        (0..dim).for_each(|a| identity[(a * dim + a) * 9 + 4] = 3.0);
        let zero = vec![0f32; 8 * dim * 9];
        for (conv, outputs) in [(identity, dim + 2), (zero, 8)] {
            let conv = tensor(vec![outputs, dim, 3, 3], conv);
            let metric = DecoderMetric::new(&conv, &codebook, "conv").unwrap();
            let (plain_codes, plain) = all_entries(&p, &codebook);
            let (mut codes, mut distances) = (plain_codes.clone(), plain.clone());
            metric.measure(&p, &codebook, &mut codes, &mut distances);
            for i in 0..6 {
                let mut want: Vec<(f32, u32)> = (0..n)
                    .map(|j| (plain[i * n + j], plain_codes[i * n + j]))
                    .collect();
                want.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (j, &(d, c)) in want.iter().enumerate() {
                    assert_eq!(codes[i * n + j], c);
                    assert!(
                        (distances[i * n + j] - d).abs() < 1e-5,
                        "{} vs {d}",
                        distances[i * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn a_first_layer_of_the_wrong_shape_is_a_typed_error() {
        let codebook = tensor(vec![3, 4], values(12, 6));
        for shape in [vec![8, 5, 3, 3], vec![8, 4, 9]] {
            let n = shape.iter().product();
            let conv = tensor(shape, values(n, 7));
            assert!(matches!(
                DecoderMetric::new(&conv, &codebook, "decoders.0.conv_in.weight"),
                Err(CodecError::Weights(
                    hvq_spec::SpecError::ShapeMismatch { .. }
                ))
            ));
        }
    }
}
