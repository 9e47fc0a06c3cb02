//! The model as data: one [`ModelGraph`] per [`ModelConfig`], holding every parameter and the
//! [`Program`]s that encode an image (all levels) and decode each level.
//!
//! This is the only place the architecture is written down. The weight schema
//! ([`crate::schema::tensors`]) is the graph's parameter list, and every backend runs the
//! programs instead of walking the model by hand: `hvq-cpu` interprets them over its ops,
//! `hvq-wgpu` lowers them to kernels, `hvq-train` interprets them with libtorch. Backend fusions
//! (a residual add into the convolution before it, a GroupNorm into the convolution after it)
//! are rewrites of a program ([`Program::fuse_residuals`], [`Program::fuse_norms`]), and
//! [`Program::schedule`] says which nodes a set of wanted values needs and when each value dies.
//!
//! ```
//! use hvq_spec::{ModelConfig, graph::{ModelGraph, Output}};
//! let g = ModelGraph::new(&ModelConfig::tiny());
//! let tokens = g.encoder.output(Output::Tokens(1)).unwrap();
//! // Level 1's tokens need the encoder and one level derivation, not level 2's.
//! let plan = g.encoder.schedule(&[tokens], &[]);
//! assert!(plan.order.len() < g.encoder.nodes.len());
//! assert_eq!(g.params.len(), hvq_spec::schema::tensors(&ModelConfig::tiny()).len());
//! ```

use crate::op_params::Conv2dParams;
use crate::schema::TensorSpec;
use crate::{FeatureMap, ModelConfig, Strategy, TokenGrid};

/// GroupNorm epsilon of every norm in the model (DESIGN.md §2): the one definition.
pub const NORM_EPS: f32 = 1e-6;

/// Index of a parameter in [`ModelGraph::params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// A value of a program: the output of node `.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub usize);

/// A GroupNorm's parameters (PyTorch semantics, epsilon [`NORM_EPS`]), optionally followed by
/// swish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Norm {
    /// Per-channel scale.
    pub gamma: ParamId,
    /// Per-channel shift.
    pub beta: ParamId,
    /// Number of groups.
    pub groups: usize,
    /// Whether swish follows.
    pub swish: bool,
}

/// A convolution's (or 1×1 projection's) kernel and bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Affine {
    /// OIHW kernel.
    pub weight: ParamId,
    /// Bias, one per output channel.
    pub bias: ParamId,
}

/// The parameters of a taming-style attention block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attention {
    /// The GroupNorm (no swish) before the projections.
    pub norm: Norm,
    /// Query projection (1×1).
    pub q: Affine,
    /// Key projection (1×1).
    pub k: Affine,
    /// Value projection (1×1).
    pub v: Affine,
    /// Output projection (1×1).
    pub proj_out: Affine,
}

/// One operation. Inputs are the node's [`Node::inputs`], in the order each variant names.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A program input: an RGB image in `[0, 1]` (encoder) or a token grid (decoder).
    Input,
    /// `(x − mean) / std` per channel, with the config's mean and std.
    Normalize,
    /// `clamp(x · std + mean, 0, 1)` per channel.
    Denormalize,
    /// A 2-D convolution of input 0. With `norm`, the GroupNorm (and swish) is applied to the
    /// input first; with a second input, that input is added to the result. Both appear only
    /// after the rewrites.
    Conv {
        /// Kernel and bias.
        affine: Affine,
        /// Stride, padding and up-sampling.
        params: Conv2dParams,
        /// A GroupNorm fused into the input ([`Program::fuse_norms`]).
        norm: Option<Norm>,
    },
    /// GroupNorm of input 0, optionally followed by swish.
    GroupNorm(Norm),
    /// Input 0 plus input 1 (same shape).
    Add,
    /// 2×2 average pool, stride 2.
    AvgPool2,
    /// Every second row and column, starting at the first: `x[:, 0::2, 0::2]`.
    Subsample2,
    /// `x + proj_out(attend(q, k, v))` with `q, k, v` projections of `GroupNorm(x)`.
    Attention(Attention),
    /// The index of the nearest codebook row (squared L2, ties to the lowest index) at every
    /// position of input 0: a token grid.
    NearestCode {
        /// The `[N, D]` codebook.
        codebook: ParamId,
    },
    /// The codebook rows that a token grid (input 0) names: a `D`-channel map.
    GatherCode {
        /// The `[N, D]` codebook.
        codebook: ParamId,
    },
}

/// What a value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A `[C, H, W]` f32 map.
    Features,
    /// A `[H, W]` grid of codebook indices.
    Tokens,
}

/// One node: an op, its inputs, and what its output holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Values read, in the op's order.
    pub inputs: Vec<Value>,
    /// Channels of the output (1 for tokens).
    pub channels: usize,
    /// Features or tokens.
    pub kind: ValueKind,
}

/// A value while a backend runs a program, as callers give and receive it.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A feature map.
    Map(FeatureMap),
    /// A token grid (its `level` is whatever the caller set; ops ignore it).
    Tokens(TokenGrid),
}

/// A named output of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// The encoder's latent `z_l` of a level (`z_channels`), before projection.
    Z(usize),
    /// The projected latent `p_l` (`codebook_dim` channels) that is quantized.
    Latent(usize),
    /// The token grid of a level.
    Tokens(usize),
    /// The codebook vectors a decoder starts from (`codebook_dim` channels).
    Quantized,
    /// A decoder's output in the model's normalized units, before [`Op::Denormalize`].
    Recon,
    /// A decoder's output as RGB in `[0, 1]`.
    Image,
}

/// A straight-line program: nodes in evaluation order (each reads only earlier nodes).
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// The nodes; [`Value`]`(i)` is node `i`'s output.
    pub nodes: Vec<Node>,
    /// The program's input (an [`Op::Input`] node).
    pub input: Value,
    /// Named values callers may ask for.
    pub outputs: Vec<(Output, Value)>,
    /// Per-channel input mean and std, for [`Op::Normalize`] and [`Op::Denormalize`].
    pub mean_std: ([f32; 3], [f32; 3]),
}

/// Which nodes to run for a set of wanted values, and when each value may be freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Nodes to evaluate, in program order. Given values and unneeded nodes are left out.
    pub order: Vec<usize>,
    /// `frees[k]`: the values whose last reader is `order[k]` (never a wanted value).
    pub frees: Vec<Vec<Value>>,
}

impl Program {
    /// The value of a named output, if the program has it.
    pub fn output(&self, which: Output) -> Option<Value> {
        self.outputs
            .iter()
            .find(|(o, _)| *o == which)
            .map(|&(_, v)| v)
    }

    /// The node that computes `v`.
    pub fn node(&self, v: Value) -> &Node {
        &self.nodes[v.0]
    }

    /// The nodes needed to compute `wanted` when the values of `given` are supplied (their
    /// nodes are not run), in program order, and the values that die after each.
    pub fn schedule(&self, wanted: &[Value], given: &[Value]) -> Schedule {
        let n = self.nodes.len();
        let mut needed = vec![false; n];
        for w in wanted {
            needed[w.0] = true;
        }
        for i in (0..n).rev() {
            if needed[i] && !given.contains(&Value(i)) {
                for v in &self.nodes[i].inputs {
                    needed[v.0] = true;
                }
            }
        }
        let order: Vec<usize> = (0..n)
            .filter(|&i| needed[i] && !given.contains(&Value(i)))
            .collect();
        let mut last = vec![None; n];
        for (k, &i) in order.iter().enumerate() {
            for v in &self.nodes[i].inputs {
                last[v.0] = Some(k);
            }
        }
        let mut frees = vec![Vec::new(); order.len()];
        for (v, l) in last.iter().enumerate() {
            if let Some(k) = *l
                && !wanted.contains(&Value(v))
            {
                frees[k].push(Value(v));
            }
        }
        Schedule { order, frees }
    }

    /// How many live nodes (those the named outputs or `keep` need) read each value, plus one
    /// for each value in `keep`. Nodes a rewrite left unread are not counted.
    fn uses(&self, keep: &[Value]) -> Vec<usize> {
        let roots: Vec<Value> = self
            .outputs
            .iter()
            .map(|&(_, v)| v)
            .chain(keep.iter().copied())
            .collect();
        let mut uses = vec![0; self.nodes.len()];
        for i in self.schedule(&roots, &[]).order {
            for v in &self.nodes[i].inputs {
                uses[v.0] += 1;
            }
        }
        for v in keep {
            uses[v.0] += 1;
        }
        uses
    }

    /// Rewrites `Add(conv, r)` into a convolution that adds `r` itself (its second input),
    /// where the convolution's result has no other reader and no value of `keep` is lost.
    /// Both backends accumulate a convolution into its residual; the plain convolution node
    /// stays behind unread, and [`Program::schedule`] skips it.
    pub fn fuse_residuals(&mut self, keep: &[Value]) {
        let uses = self.uses(keep);
        for i in 0..self.nodes.len() {
            if self.nodes[i].op != Op::Add {
                continue;
            }
            let [a, b] = [self.nodes[i].inputs[0], self.nodes[i].inputs[1]];
            let fusable = |c: Value| {
                let node = &self.nodes[c.0];
                matches!(node.op, Op::Conv { .. }) && node.inputs.len() == 1 && uses[c.0] == 1
            };
            let (conv, residual) = if fusable(b) {
                (b, a)
            } else if fusable(a) {
                (a, b)
            } else {
                continue;
            };
            let mut fused = self.nodes[conv.0].clone();
            fused.inputs.push(residual);
            self.nodes[i] = fused;
        }
    }

    /// Rewrites `Conv(GroupNorm(x))` into a convolution that normalizes its input itself, where
    /// the norm's result has no other reader and is not in `keep`.
    pub fn fuse_norms(&mut self, keep: &[Value]) {
        let uses = self.uses(keep);
        for i in 0..self.nodes.len() {
            let Op::Conv { norm: None, .. } = self.nodes[i].op else {
                continue;
            };
            let x = self.nodes[i].inputs[0];
            let Op::GroupNorm(norm) = self.nodes[x.0].op else {
                continue;
            };
            if uses[x.0] != 1 {
                continue;
            }
            let source = self.nodes[x.0].inputs[0];
            if let Op::Conv { norm: slot, .. } = &mut self.nodes[i].op {
                *slot = Some(norm);
            }
            self.nodes[i].inputs[0] = source;
        }
    }
}

/// Every parameter of a model and its programs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelGraph {
    /// Every tensor the model owns, in canonical order (this is [`crate::schema::tensors`]).
    pub params: Vec<TensorSpec>,
    /// Image → latents and tokens of every level.
    pub encoder: Program,
    /// Tokens → image, one program per level.
    pub decoders: Vec<Program>,
}

impl ModelGraph {
    /// The model of `cfg` (which must be valid, see [`ModelConfig::validate`]).
    pub fn new(cfg: &ModelConfig) -> Self {
        let mut params = Params::default();
        let encoder = build_encoder(cfg, &mut params);
        let decoders = (0..cfg.levels)
            .map(|level| build_decoder(cfg, level, &mut params))
            .collect();
        ModelGraph {
            params: params.0,
            encoder,
            decoders,
        }
    }

    /// The parameter `id`.
    pub fn param(&self, id: ParamId) -> &TensorSpec {
        &self.params[id.0]
    }
}

/// The parameter table under construction.
#[derive(Default)]
struct Params(Vec<TensorSpec>);

impl Params {
    fn declare(&mut self, name: String, shape: Vec<usize>) -> ParamId {
        self.0.push(TensorSpec { name, shape });
        ParamId(self.0.len() - 1)
    }
}

/// Builds one program, declaring parameters as the walk meets them: the walk's order is the
/// schema's canonical order.
struct Builder<'a> {
    cfg: &'a ModelConfig,
    params: &'a mut Params,
    nodes: Vec<Node>,
    outputs: Vec<(Output, Value)>,
}

impl<'a> Builder<'a> {
    fn new(cfg: &'a ModelConfig, params: &'a mut Params) -> Self {
        Builder {
            cfg,
            params,
            nodes: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn finish(self, input: Value) -> Program {
        Program {
            nodes: self.nodes,
            input,
            outputs: self.outputs,
            mean_std: (self.cfg.mean, self.cfg.std),
        }
    }

    fn push(&mut self, op: Op, inputs: Vec<Value>, channels: usize, kind: ValueKind) -> Value {
        self.nodes.push(Node {
            op,
            inputs,
            channels,
            kind,
        });
        Value(self.nodes.len() - 1)
    }

    fn channels(&self, v: Value) -> usize {
        self.nodes[v.0].channels
    }

    /// A node whose output has its input's shape.
    fn same(&mut self, op: Op, x: Value) -> Value {
        let c = self.channels(x);
        self.push(op, vec![x], c, ValueKind::Features)
    }

    fn affine(&mut self, prefix: &str, weight: Vec<usize>) -> Affine {
        let bias = vec![weight[0]];
        Affine {
            weight: self.params.declare(format!("{prefix}.weight"), weight),
            bias: self.params.declare(format!("{prefix}.bias"), bias),
        }
    }

    fn norm_params(&mut self, prefix: &str, c: usize, swish: bool) -> Norm {
        Norm {
            gamma: self.params.declare(format!("{prefix}.weight"), vec![c]),
            beta: self.params.declare(format!("{prefix}.bias"), vec![c]),
            groups: self.cfg.norm_groups,
            swish,
        }
    }

    fn conv(&mut self, x: Value, prefix: &str, cout: usize, k: usize, p: Conv2dParams) -> Value {
        let cin = self.channels(x);
        let affine = self.affine(prefix, vec![cout, cin, k, k]);
        let op = Op::Conv {
            affine,
            params: p,
            norm: None,
        };
        self.push(op, vec![x], cout, ValueKind::Features)
    }

    fn norm(&mut self, x: Value, prefix: &str, swish: bool) -> Value {
        let c = self.channels(x);
        let norm = self.norm_params(prefix, c, swish);
        self.same(Op::GroupNorm(norm), x)
    }

    fn add(&mut self, a: Value, b: Value) -> Value {
        let c = self.channels(a);
        self.push(Op::Add, vec![a, b], c, ValueKind::Features)
    }

    /// `skip(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))`; the skip is a 1×1
    /// `nin_shortcut` exactly when the channel count changes.
    fn res_block(&mut self, x: Value, p: &str, cout: usize) -> Value {
        let cin = self.channels(x);
        let h = self.norm(x, &format!("{p}.norm1"), true);
        let h = self.conv(h, &format!("{p}.conv1"), cout, 3, Conv2dParams::SAME);
        let h = self.norm(h, &format!("{p}.norm2"), true);
        let h = self.conv(h, &format!("{p}.conv2"), cout, 3, Conv2dParams::SAME);
        let skip = if cin == cout {
            x
        } else {
            self.conv(x, &format!("{p}.nin_shortcut"), cout, 1, Conv2dParams::SAME)
        };
        self.add(skip, h)
    }

    fn attention(&mut self, x: Value, p: &str) -> Value {
        let c = self.channels(x);
        let norm = self.norm_params(&format!("{p}.norm"), c, false);
        let [q, k, v, proj_out] = ["q", "k", "v", "proj_out"]
            .map(|part| self.affine(&format!("{p}.{part}"), vec![c, c, 1, 1]));
        let op = Op::Attention(Attention {
            norm,
            q,
            k,
            v,
            proj_out,
        });
        self.same(op, x)
    }

    /// ResBlock, optional attention, ResBlock.
    fn mid(&mut self, x: Value, p: &str) -> Value {
        let c = self.channels(x);
        let mut h = self.res_block(x, &format!("{p}.block_1"), c);
        if self.cfg.mid_attention {
            h = self.attention(h, &format!("{p}.attn_1"));
        }
        self.res_block(h, &format!("{p}.block_2"), c)
    }

    /// `z_level` from `z_{level-1}`: the one place the level strategies differ.
    fn derive_level(&mut self, z: Value, level: usize) -> Value {
        let c = self.channels(z);
        let down = format!("levels.{level}.down.conv");
        match self.cfg.strategy {
            Strategy::Pooling => {
                let pooled = self.same(Op::AvgPool2, z);
                let conv = self.conv(z, &down, c, 3, Conv2dParams::DOWNSAMPLE);
                self.add(pooled, conv)
            }
            Strategy::Sampling => self.same(Op::Subsample2, z),
            Strategy::Avgpool => self.same(Op::AvgPool2, z),
            Strategy::Convpool => self.conv(z, &down, c, 3, Conv2dParams::DOWNSAMPLE),
            Strategy::Sampleconv => {
                let sampled = self.same(Op::Subsample2, z);
                let conv = self.conv(z, &down, c, 3, Conv2dParams::DOWNSAMPLE);
                self.add(sampled, conv)
            }
        }
    }
}

fn build_encoder(cfg: &ModelConfig, params: &mut Params) -> Program {
    let mut b = Builder::new(cfg, params);
    let image = b.push(Op::Input, vec![], cfg.in_channels, ValueKind::Features);
    let x = b.same(Op::Normalize, image);
    let mut h = b.conv(x, "encoder.conv_in", cfg.channels, 3, Conv2dParams::SAME);
    let last = cfg.channel_mult.len() - 1;
    for (i, &mult) in cfg.channel_mult.iter().enumerate() {
        for j in 0..cfg.num_res_blocks {
            h = b.res_block(
                h,
                &format!("encoder.down.{i}.block.{j}"),
                cfg.channels * mult,
            );
        }
        if i != last {
            let c = b.channels(h);
            let name = format!("encoder.down.{i}.downsample.conv");
            h = b.conv(h, &name, c, 3, Conv2dParams::DOWNSAMPLE);
        }
    }
    h = b.mid(h, "encoder.mid");
    h = b.norm(h, "encoder.norm_out", true);
    let mut zs = vec![b.conv(h, "encoder.conv_out", cfg.z_channels, 3, Conv2dParams::SAME)];
    for level in 1..cfg.levels {
        let z = b.derive_level(zs[level - 1], level);
        zs.push(z);
    }
    let proj = b.affine(
        "quantizer.proj",
        vec![cfg.codebook_dim, cfg.z_channels, 1, 1],
    );
    let codebook = b.params.declare(
        "quantizer.codebook".into(),
        vec![cfg.codebook_size, cfg.codebook_dim],
    );
    for (level, &z) in zs.iter().enumerate() {
        let op = Op::Conv {
            affine: proj,
            params: Conv2dParams::SAME,
            norm: None,
        };
        let p = b.push(op, vec![z], cfg.codebook_dim, ValueKind::Features);
        let t = b.push(Op::NearestCode { codebook }, vec![p], 1, ValueKind::Tokens);
        b.outputs.extend([
            (Output::Z(level), z),
            (Output::Latent(level), p),
            (Output::Tokens(level), t),
        ]);
    }
    b.finish(image)
}

fn build_decoder(cfg: &ModelConfig, level: usize, params: &mut Params) -> Program {
    // The codebook is declared by the encoder; every program shares the one table.
    let codebook = ParamId(
        params
            .0
            .iter()
            .position(|t| t.name == "quantizer.codebook")
            .expect("the encoder declares the codebook first"),
    );
    let mut b = Builder::new(cfg, params);
    let p = format!("decoders.{level}");
    let tokens = b.push(Op::Input, vec![], 1, ValueKind::Tokens);
    let e = b.push(
        Op::GatherCode { codebook },
        vec![tokens],
        cfg.codebook_dim,
        ValueKind::Features,
    );
    let mults = cfg.decoder_stage_mults(level);
    let mut h = b.conv(
        e,
        &format!("{p}.conv_in"),
        cfg.channels * mults[0],
        3,
        Conv2dParams::SAME,
    );
    h = b.mid(h, &format!("{p}.mid"));
    let last = mults.len() - 1;
    for (s, &mult) in mults.iter().enumerate() {
        for j in 0..cfg.decoder_res_blocks {
            h = b.res_block(h, &format!("{p}.up.{s}.block.{j}"), cfg.channels * mult);
        }
        if s != last {
            let c = b.channels(h);
            let name = format!("{p}.up.{s}.upsample.conv");
            h = b.conv(h, &name, c, 3, Conv2dParams::UPSAMPLE);
        }
    }
    h = b.norm(h, &format!("{p}.norm_out"), true);
    let recon = b.conv(
        h,
        &format!("{p}.conv_out"),
        cfg.in_channels,
        3,
        Conv2dParams::SAME,
    );
    let image = b.same(Op::Denormalize, recon);
    b.outputs.extend([
        (Output::Quantized, e),
        (Output::Recon, recon),
        (Output::Image, image),
    ]);
    b.finish(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(strategy: Strategy) -> ModelConfig {
        ModelConfig {
            strategy,
            ..ModelConfig::tiny()
        }
    }

    #[test]
    fn every_node_reads_only_earlier_nodes() {
        for strategy in Strategy::ALL {
            let g = ModelGraph::new(&tiny(strategy));
            for p in std::iter::once(&g.encoder).chain(&g.decoders) {
                for (i, node) in p.nodes.iter().enumerate() {
                    assert!(node.inputs.iter().all(|v| v.0 < i), "{strategy:?} node {i}");
                }
            }
        }
    }

    #[test]
    fn schedule_prunes_deeper_levels_and_given_values() {
        let g = ModelGraph::new(&ModelConfig::tiny());
        let e = &g.encoder;
        let t0 = e.output(Output::Tokens(0)).unwrap();
        let t2 = e.output(Output::Tokens(2)).unwrap();
        let shallow = e.schedule(&[t0], &[]);
        let deep = e.schedule(&[t2], &[]);
        assert!(shallow.order.len() < deep.order.len());
        assert!(!shallow.order.contains(&e.output(Output::Z(1)).unwrap().0));
        // Given the latent, its tokens are one node.
        let p2 = e.output(Output::Latent(2)).unwrap();
        assert_eq!(e.schedule(&[t2], &[p2]).order, vec![t2.0]);
        // Every read value but the wanted one is freed exactly once.
        let freed: Vec<Value> = deep.frees.iter().flatten().copied().collect();
        let mut unique = freed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), freed.len());
        assert!(!freed.contains(&t2));
    }

    #[test]
    fn rewrites_fuse_every_residual_add_and_every_norm_before_a_conv() {
        let g = ModelGraph::new(&tiny(Strategy::Pooling));
        let mut e = g.encoder.clone();
        let wanted: Vec<Value> = e.outputs.iter().map(|&(_, v)| v).collect();
        let before = e.schedule(&wanted, &[]).order.len();
        e.fuse_residuals(&wanted);
        e.fuse_norms(&wanted);
        let plan = e.schedule(&wanted, &[]);
        let ops: Vec<&Op> = plan.order.iter().map(|&i| &e.nodes[i].op).collect();
        assert!(!ops.iter().any(|op| matches!(op, Op::Add)), "{ops:?}");
        assert!(
            !ops.iter().any(|op| matches!(op, Op::GroupNorm(_))),
            "{ops:?}"
        );
        assert!(plan.order.len() < before);
    }

    #[test]
    fn a_kept_value_is_not_fused_away() {
        let g = ModelGraph::new(&ModelConfig::tiny());
        let mut e = g.encoder.clone();
        let all: Vec<Value> = (0..e.nodes.len()).map(Value).collect();
        let original = e.clone();
        e.fuse_residuals(&all);
        e.fuse_norms(&all);
        assert_eq!(e, original);
    }
}
