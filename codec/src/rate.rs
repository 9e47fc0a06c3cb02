//! Rate–distortion encoding ([`crate::CodecBuilder::rate_distortion`]): the backend gives the latents,
//! the CPU finds each position's [`RD_CANDIDATES`] nearest codebook entries, and
//! [`hvq_format::choose_tokens`] picks among them, coarsest level first so that each finer level sees
//! the parent tokens the file will hold.

use hvq_format::{Candidates, choose_tokens};
use hvq_spec::{Tensor, TokenGrid, Weights};

use crate::codec::paste_rows;
use crate::tiling;
use crate::{Codec, CodecError, Progress, Result, RgbImage, Tokens};

/// Codebook entries considered per position. With the embedded model, 4 keeps well under half of the
/// gain of 16 at λ = 0.3 (`docs/results/rate-distortion.md`); more than 16 was not measured.
pub const RD_CANDIDATES: usize = 16;

/// What a rate–distortion encode needs beyond the engine: the weight and the codebook.
#[derive(Debug)]
pub(crate) struct RateDistortion {
    lambda: f64,
    codebook: Tensor,
}

impl RateDistortion {
    pub(crate) fn new(weights: &Weights, lambda: f64) -> Result<RateDistortion> {
        let codebook = weights
            .get("quantizer.codebook")
            .cloned()
            .ok_or(CodecError::Weights(hvq_spec::SpecError::MissingTensor {
                tensor: "quantizer.codebook".into(),
            }))?;
        Ok(RateDistortion { lambda, codebook })
    }

    pub(crate) fn lambda(&self) -> f64 {
        self.lambda
    }
}

/// One level's candidates for the whole padded image.
struct LevelCandidates {
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
        let mut all: Vec<LevelCandidates> = self
            .empty_grids(levels, w, h)
            .into_iter()
            .map(|g| LevelCandidates {
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
                    let (codes, distances) = hvq_cpu::ops::nearest_k_codes(p, &rd.codebook, k)
                        .map_err(CodecError::Cpu)?;
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
        // Coarsest first: a level's parent context is the chosen grid of the level above, when the
        // file holds it right before (as the writer decides).
        all.sort_by_key(|c| std::cmp::Reverse(c.level));
        let mut grids: Vec<TokenGrid> = Vec::with_capacity(all.len());
        for c in &all {
            let candidates = Candidates {
                height: c.height,
                width: c.width,
                k,
                codes: &c.codes,
                distances: &c.distances,
            };
            let parent = grids.last().filter(|p| p.level == c.level + 1);
            let tokens = choose_tokens(self.priors(), c.level, candidates, parent, rd.lambda)
                .map_err(CodecError::Format)?;
            grids.push(TokenGrid {
                level: c.level,
                height: c.height,
                width: c.width,
                tokens,
            });
        }
        grids.reverse();
        Ok(Tokens {
            width: image.width(),
            height: image.height(),
            grids,
        })
    }
}
