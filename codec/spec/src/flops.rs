//! Floating-point operation counts of the model's programs, read off the graph.
//!
//! A FLOP here is one multiply or one add: a multiply-add counts 2. Counted are the ops that
//! are matrix products: every convolution (at its output size, so stride 2 quarters and nearest
//! up-sampling quadruples it), the attention block's four projections and its two products
//! `qᵀk` and `attn·v`, and the codebook search's distance product `[positions × D] · [D × N]`.
//! Everything else — GroupNorm, swish, biases, residual adds, softmax, pooling, the `‖e‖²`
//! terms of the distance, the arg-min — is memory-bound, a few percent of the total at most,
//! and left out, as FLOP counts for hardware utilisation usually do.
//!
//! The backward count follows autograd: each weighted op (convolution, projection) computes a
//! gradient of its weight (as much work as its forward) and, where its input depends on a
//! parameter, a gradient of that input (as much again); a product of two activations computes
//! both operands' gradients (twice its forward). The encoder's first convolution reads the
//! image and so has no input gradient; a decoder's input is a codebook lookup, which depends on
//! the codebook (and in training on the encoder, through the straight-through estimator), so
//! it has one. The codebook search has no gradient.
//!
//! ```
//! use hvq_spec::{ModelConfig, flops::ModelFlops, graph::ModelGraph};
//! let g = ModelGraph::new(&ModelConfig::small());
//! let f = ModelFlops::new(&g, 256, 256);
//! assert_eq!(f.decoders.len(), 3);
//! assert!(f.total().backward > f.total().forward);
//! ```

use std::ops::{Add, AddAssign};

use crate::graph::{ModelGraph, Op, Output, Program, Value};
use crate::op_params::Padding;

/// Forward and backward FLOPs of one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flops {
    /// The forward pass.
    pub forward: u64,
    /// The backward pass (gradients of every parameter and every parameter-dependent input).
    pub backward: u64,
}

impl Flops {
    /// Forward plus backward: one training step's model work, without the optimizer.
    pub fn train(self) -> u64 {
        self.forward + self.backward
    }
}

impl Add for Flops {
    type Output = Flops;
    fn add(self, o: Flops) -> Flops {
        Flops {
            forward: self.forward + o.forward,
            backward: self.backward + o.backward,
        }
    }
}

impl AddAssign for Flops {
    fn add_assign(&mut self, o: Flops) {
        *self = *self + o;
    }
}

/// The FLOPs of one image through each program of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFlops {
    /// Image → every level's tokens (the encoder, level derivation, projection, codebook search).
    pub encoder: Flops,
    /// Each level's decoder, finest first, from that level's token grid to the full image.
    pub decoders: Vec<Flops>,
}

impl ModelFlops {
    /// The counts of a `width`×`height` image: the encoder at that size, each decoder at its
    /// level's token grid (as the encoder produces it).
    pub fn new(graph: &ModelGraph, width: usize, height: usize) -> Self {
        let enc = count(graph, &graph.encoder, (height, width));
        let decoders = graph
            .decoders
            .iter()
            .enumerate()
            .map(|(l, d)| {
                let tokens = graph
                    .encoder
                    .output(Output::Tokens(l))
                    .expect("the encoder outputs every level's tokens");
                count(graph, d, enc.sizes[tokens.0]).flops
            })
            .collect();
        ModelFlops {
            encoder: enc.flops,
            decoders,
        }
    }

    /// The encoder and every decoder: what one training step runs per image.
    pub fn total(&self) -> Flops {
        self.decoders.iter().fold(self.encoder, |a, &d| a + d)
    }
}

/// The FLOPs of one image through `program` from an input of `(height, width)`: only the nodes
/// its named outputs need (nodes a rewrite left unread are not counted).
pub fn program_flops(graph: &ModelGraph, program: &Program, input: (usize, usize)) -> Flops {
    count(graph, program, input).flops
}

struct Counted {
    flops: Flops,
    /// `(height, width)` of every node's output.
    sizes: Vec<(usize, usize)>,
}

fn count(graph: &ModelGraph, program: &Program, input: (usize, usize)) -> Counted {
    let n = program.nodes.len();
    let mut sizes = vec![(0, 0); n];
    // Whether a value depends on a parameter, i.e. whether backward computes its gradient.
    let mut grad = vec![false; n];
    let wanted: Vec<Value> = program.outputs.iter().map(|&(_, v)| v).collect();
    let live = program.schedule(&wanted, &[]).order;
    let mut flops = Flops::default();
    for i in 0..n {
        let node = &program.nodes[i];
        let first = node.inputs.first().map(|v| v.0);
        let (hw, input_grad) = first.map_or((input, false), |j| (sizes[j], grad[j]));
        let any_grad = node.inputs.iter().any(|v| grad[v.0]);
        let (h, w) = hw;
        let positions = (h * w) as u64;
        let (out, f, depends) = match &node.op {
            Op::Input => (input, Flops::default(), false),
            Op::Normalize | Op::Denormalize | Op::GroupNorm(_) | Op::Add => {
                // Norms have parameters, but their work is not counted.
                let depends = any_grad || matches!(node.op, Op::GroupNorm(_));
                (hw, Flops::default(), depends)
            }
            Op::AvgPool2 => ((h / 2, w / 2), Flops::default(), any_grad),
            Op::Subsample2 => ((h.div_ceil(2), w.div_ceil(2)), Flops::default(), any_grad),
            Op::Conv {
                affine,
                params,
                norm,
            } => {
                let shape = &graph.param(affine.weight).shape;
                let (cout, cin, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
                let (h, w) = if params.upsample {
                    (2 * h, 2 * w)
                } else {
                    (h, w)
                };
                let pad = |k: usize| match params.padding {
                    Padding::Same => 2 * (k / 2),
                    Padding::DownsampleRightBottom => 1,
                };
                let side = |x: usize, k: usize| (x + pad(k) - k) / params.stride + 1;
                let (ho, wo) = (side(h, kh), side(w, kw));
                let fwd = 2 * (cout * cin * kh * kw * ho * wo) as u64;
                // A fused norm's parameters make its input a parameter's function.
                ((ho, wo), weighted(fwd, input_grad || norm.is_some()), true)
            }
            Op::Attention(_) => {
                let c = node.channels as u64;
                let projections = 4 * 2 * positions * c * c;
                let products = 2 * 2 * positions * positions * c;
                let mut f = weighted(projections, true);
                f.forward += products;
                f.backward += 2 * products;
                (hw, f, true)
            }
            Op::NearestCode { codebook } => {
                let shape = &graph.param(*codebook).shape;
                let (entries, dim) = (shape[0] as u64, shape[1] as u64);
                let f = Flops {
                    forward: 2 * positions * entries * dim,
                    backward: 0,
                };
                (hw, f, false)
            }
            Op::GatherCode { .. } => (hw, Flops::default(), true),
        };
        sizes[i] = out;
        grad[i] = depends;
        if live.contains(&i) {
            flops += f;
        }
    }
    Counted { flops, sizes }
}

/// A weighted op of `forward` FLOPs: its weight gradient, and its input gradient when asked.
fn weighted(forward: u64, input_grad: bool) -> Flops {
    Flops {
        forward,
        backward: forward * if input_grad { 2 } else { 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Affine, Node, ValueKind};
    use crate::op_params::Conv2dParams;
    use crate::schema::TensorSpec;
    use crate::{ModelConfig, PRESETS};

    /// A graph holding one program: `Input → Conv(k×k, cin→cout, params)`.
    fn one_conv(cin: usize, cout: usize, k: usize, params: Conv2dParams) -> ModelGraph {
        let spec = |name: &str, shape: Vec<usize>| TensorSpec {
            name: name.into(),
            shape,
        };
        let program = Program {
            nodes: vec![
                Node {
                    op: Op::Input,
                    inputs: vec![],
                    channels: cin,
                    kind: ValueKind::Features,
                },
                Node {
                    op: Op::Conv {
                        affine: Affine {
                            weight: crate::graph::ParamId(0),
                            bias: crate::graph::ParamId(1),
                        },
                        params,
                        norm: None,
                    },
                    inputs: vec![Value(0)],
                    channels: cout,
                    kind: ValueKind::Features,
                },
            ],
            input: Value(0),
            outputs: vec![(Output::Recon, Value(1))],
            mean_std: ([0.0; 3], [1.0; 3]),
        };
        ModelGraph {
            params: vec![spec("w", vec![cout, cin, k, k]), spec("b", vec![cout])],
            encoder: program,
            decoders: vec![],
        }
    }

    #[test]
    fn a_single_conv_counts_two_flops_per_multiply_add() {
        // 3×3, 4 → 8 channels, 10×6 output: 8·4·9 MACs per position, 60 positions.
        let g = one_conv(4, 8, 3, Conv2dParams::SAME);
        let f = program_flops(&g, &g.encoder, (6, 10));
        assert_eq!(f.forward, 2 * 8 * 4 * 9 * 60);
        // The input is the program's, not a parameter's: only the weight gradient.
        assert_eq!(f.backward, f.forward);
    }

    #[test]
    fn stride_and_upsampling_set_the_output_size() {
        let macs = 8 * 4 * 9;
        // Pad right/bottom by 1, stride 2: 10×6 → 5×3 (PyTorch: (10 + 1 − 3) / 2 + 1 = 5).
        let g = one_conv(4, 8, 3, Conv2dParams::DOWNSAMPLE);
        assert_eq!(
            program_flops(&g, &g.encoder, (6, 10)).forward,
            2 * macs * 15
        );
        // Odd sides, width 7 and height 5: (7 + 1 − 3) / 2 + 1 = 3 by (5 + 1 − 3) / 2 + 1 = 2.
        assert_eq!(
            program_flops(&g, &g.encoder, (5, 7)).forward,
            2 * macs * ((7 - 2) / 2 + 1) * ((5 - 2) / 2 + 1)
        );
        // Nearest ×2 first: 10×6 → 20×12.
        let g = one_conv(4, 8, 3, Conv2dParams::UPSAMPLE);
        assert_eq!(
            program_flops(&g, &g.encoder, (6, 10)).forward,
            2 * macs * 240
        );
        // 1×1.
        let g = one_conv(4, 8, 1, Conv2dParams::SAME);
        assert_eq!(
            program_flops(&g, &g.encoder, (6, 10)).forward,
            2 * 8 * 4 * 60
        );
    }

    /// The paper preset's encoder and finest decoder by hand, at 256×256.
    #[test]
    fn paper_preset_matches_a_hand_count() {
        let cfg = ModelConfig::paper();
        let g = ModelGraph::new(&cfg);
        let f = ModelFlops::new(&g, 256, 256);
        let conv = |cin: u64, cout: u64, k: u64, side: u64| 2 * cin * cout * k * k * side * side;
        let res = |cin, cout, side| {
            conv(cin, cout, 3, side)
                + conv(cout, cout, 3, side)
                + if cin == cout {
                    0
                } else {
                    conv(cin, cout, 1, side)
                }
        };
        let attn = |c: u64, side: u64| {
            let p = side * side;
            8 * p * c * c + 4 * p * p * c
        };
        // Encoder: 128 @256, 256 @128, 512 @64; 2 ResBlocks each; mid at 64 with attention.
        let mut enc = conv(3, 128, 3, 256) + 2 * res(128, 128, 256);
        enc += conv(128, 128, 3, 128) + res(128, 256, 128) + res(256, 256, 128);
        enc += conv(256, 256, 3, 64) + res(256, 512, 64) + res(512, 512, 64);
        enc += 2 * res(512, 512, 64) + attn(512, 64) + conv(512, 256, 3, 64);
        // Pooling levels 1, 2: a stride-2 3×3 at 32 and 16; projection and search per level.
        enc += conv(256, 256, 3, 32) + conv(256, 256, 3, 16);
        for side in [64, 32, 16] {
            enc += conv(256, 256, 1, side) + 2 * side * side * 20_000 * 256;
        }
        assert_eq!(f.encoder.forward, enc);
        // Finest decoder: conv_in 256→512 @64, mid @64, stages 512 @64, 256 @128, 128 @256
        // with one ResBlock each and an up-sampler between them, conv_out 128→3.
        let mut dec = conv(256, 512, 3, 64) + 2 * res(512, 512, 64) + attn(512, 64);
        dec += res(512, 512, 64) + conv(512, 512, 3, 128);
        dec += res(512, 256, 128) + conv(256, 256, 3, 256);
        dec += res(256, 128, 256) + conv(128, 3, 3, 256);
        assert_eq!(f.decoders[0].forward, dec);
    }

    #[test]
    fn backward_is_twice_forward_except_where_the_rules_say() {
        for name in PRESETS {
            let g = ModelGraph::new(&ModelConfig::preset(name).unwrap());
            let f = ModelFlops::new(&g, 64, 64);
            for d in &f.decoders {
                // Every decoder op is weighted or an attention product, all with input gradients.
                assert_eq!(d.backward, 2 * d.forward, "{name}");
            }
            // The encoder's search has no backward, its first conv no input gradient.
            assert!(f.encoder.backward < 2 * f.encoder.forward, "{name}");
        }
    }

    #[test]
    fn fused_programs_count_the_same() {
        let g = ModelGraph::new(&ModelConfig::tiny());
        let mut fused = g.clone();
        for p in std::iter::once(&mut fused.encoder).chain(&mut fused.decoders) {
            let keep: Vec<Value> = p.outputs.iter().map(|&(_, v)| v).collect();
            p.fuse_residuals(&keep);
            p.fuse_norms(&keep);
        }
        assert_eq!(ModelFlops::new(&g, 48, 32), ModelFlops::new(&fused, 48, 32));
    }
}
