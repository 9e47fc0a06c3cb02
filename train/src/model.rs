//! The hierarchical shared-codebook VQ-VAE of DESIGN.md §2 in tch: the programs of
//! [`hvq_spec::graph`] run by one libtorch interpreter ([`Hvq::run`]), the twin of `hvq-cpu`'s.
//!
//! Every variable is created from the graph's parameter list under the name the weight schema
//! ([`hvq_spec::schema`]) gives it, so a [`nn::VarStore`] of a [`Hvq`] holds exactly the
//! schema's tensors.

use hvq_spec::ModelConfig;
use hvq_spec::graph::{self, Affine, ModelGraph, Node, Norm, Op, Output, ParamId, Program, Value};
use hvq_spec::op_params::{Conv2dParams, Padding};
use tch::nn;
use tch::{Kind, Reduction, Tensor};

/// What the model computes for one level.
#[derive(Debug)]
pub struct LevelOutput {
    /// Projected latent `p_l` before quantization, `[B, D, h, w]`.
    pub latent: Tensor,
    /// Codebook indices, i64 `[B, h, w]`.
    pub tokens: Tensor,
    /// Quantized latent with the straight-through gradient, `[B, D, h, w]`.
    pub quantized: Tensor,
    /// Reconstruction in normalized units, `[B, 3, H, W]`.
    pub recon: Tensor,
    /// `‖sg(p) − e‖²` (mean over elements): moves only the codebook.
    pub codebook_loss: Tensor,
    /// `‖p − sg(e)‖²` (mean over elements): moves only encoder-side parameters.
    pub commitment_loss: Tensor,
}

/// The whole model: the graph's programs (encoder with the level chain and the shared
/// quantizer, one decoder per level) and a libtorch variable for each of its parameters.
#[derive(Debug)]
pub struct Hvq {
    cfg: ModelConfig,
    graph: ModelGraph,
    /// `params[id.0]` is the variable of parameter `id`.
    params: Vec<Tensor>,
    /// The shared codebook.
    codebook: ParamId,
    /// The encoder's normalized input, where [`Hvq::level_latents`] starts.
    normalized: Value,
    /// How the encoder and decoders compute (f32 unless [`Hvq::set_compute`] changed it).
    compute: Compute,
}

/// How the encoder's and decoders' convolutions and attention compute. The projection into
/// codebook space, the distances, the nearest entry and the lookup always run in f32, so a
/// latent's token is what the codec computes for that latent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compute {
    /// `Kind::Float`, or `Kind::BFloat16` for the convolutions and attention (GroupNorm,
    /// residual sums and everything after the decoders stay f32).
    pub kind: Kind,
    /// Attention through libtorch's fused scaled-dot-product kernel instead of two batched
    /// matrix products (flash or memory-efficient attention on CUDA; rounding differs slightly).
    pub fused_attention: bool,
}

impl Default for Compute {
    fn default() -> Self {
        Compute {
            kind: Kind::Float,
            fused_attention: false,
        }
    }
}

impl Hvq {
    /// Creates every variable of `cfg` under `root`, named as in the weight schema.
    ///
    /// The config must be valid ([`ModelConfig::validate`]); call sites validate first.
    pub fn new(root: &nn::Path<'_>, cfg: &ModelConfig) -> Self {
        let graph = ModelGraph::new(cfg);
        let inits = initialisers(&graph);
        let mut params: Vec<Option<Tensor>> = graph.params.iter().map(|_| None).collect();
        for i in creation_order(&graph) {
            let spec = &graph.params[i];
            let dims: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            params[i] = Some(var(root, &spec.name, &dims, inits[i]));
        }
        let params = params
            .into_iter()
            .map(|t| t.expect("every parameter is created"))
            .collect();
        let e = &graph.encoder;
        let codebook = match e.node(output(e, Output::Tokens(0))).op {
            Op::NearestCode { codebook } => codebook,
            _ => unreachable!("a level's tokens are its nearest codebook entries"),
        };
        let normalized = Value(
            e.nodes
                .iter()
                .position(|n| n.op == Op::Normalize)
                .expect("the encoder normalizes its input"),
        );
        Hvq {
            cfg: cfg.clone(),
            graph,
            params,
            codebook,
            normalized,
            compute: Compute::default(),
        }
    }

    /// Changes how the encoder and decoders compute (a training speed option).
    pub fn set_compute(&mut self, compute: Compute) {
        self.compute = compute;
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The programs this model runs.
    pub fn graph(&self) -> &ModelGraph {
        &self.graph
    }

    /// The shared codebook variable `[N, D]`.
    pub fn codebook(&self) -> &Tensor {
        self.param(self.codebook)
    }

    /// Maps `[0, 1]` pixels to the model's normalized input space.
    pub fn normalize(&self, x01: &Tensor) -> Tensor {
        let (mean, std) = self.graph.encoder.mean_std;
        normalize(x01, mean, std)
    }

    /// Maps normalized outputs back to `[0, 1]` pixels, clamped.
    pub fn denormalize(&self, y: &Tensor) -> Tensor {
        let (mean, std) = self.graph.encoder.mean_std;
        denormalize(y, mean, std)
    }

    /// Encoder output per level (`z_l`, before projection), finest first.
    pub fn level_latents(&self, x_norm: &Tensor) -> Vec<Tensor> {
        let e = &self.graph.encoder;
        let wanted: Vec<Value> = (0..self.cfg.levels)
            .map(|l| output(e, Output::Z(l)))
            .collect();
        self.run(e, vec![(self.normalized, x_norm.shallow_clone())], &wanted)
    }

    /// Projects a latent `z_l` into codebook space: `p_l`.
    ///
    /// Every level shares the projection, so level 0's stands for all.
    pub fn project(&self, z: &Tensor) -> Tensor {
        let e = &self.graph.encoder;
        let (z0, p0) = (output(e, Output::Z(0)), output(e, Output::Latent(0)));
        let z = z.to_kind(Kind::Float);
        one(self.run_in(e, vec![(z0, z)], &[p0], Kind::Float))
    }

    /// Nearest codebook entry of every position of `p` `[B, D, h, w]`: i64 `[B, h, w]`.
    ///
    /// Ties go to the lowest index (`argmin` returns the first minimum).
    pub fn nearest(&self, p: &Tensor) -> Tensor {
        nearest(p, self.codebook())
    }

    /// Codebook entries of `tokens` i64 `[B, h, w]` as a `[B, D, h, w]` latent.
    pub fn lookup(&self, tokens: &Tensor) -> Tensor {
        lookup(tokens, self.codebook())
    }

    /// Reconstruction (normalized units) of level `level` from a quantized latent.
    pub fn decode(&self, level: usize, quantized: &Tensor) -> Tensor {
        let d = &self.graph.decoders[level];
        let given = vec![(output(d, Output::Quantized), quantized.shallow_clone())];
        one(self.run(d, given, &[output(d, Output::Recon)]))
    }

    /// The codec's encode of `[0, 1]` pixels `[B, 3, H, W]` (H and W multiples of the coarsest
    /// stride): normalization, encoder, level derivation, projection and nearest entry; i64
    /// tokens `[B, h_l, w_l]` per level, finest first. Call under `tch::no_grad` for inference.
    pub fn encode_tokens(&self, x01: &Tensor) -> Vec<Tensor> {
        self.level_latents(&self.normalize(x01))
            .iter()
            .map(|z| self.nearest(&self.project(z)))
            .collect()
    }

    /// The codec's decode of level `level`'s i64 tokens `[B, h, w]`: lookup, decoder and
    /// de-normalization, pixels `[B, 3, H, W]` clamped to `[0, 1]`.
    pub fn decode_tokens(&self, level: usize, tokens: &Tensor) -> Tensor {
        self.denormalize(&self.decode(level, &self.lookup(tokens)))
    }

    /// Full forward pass of a normalized batch: every level's latent, tokens and reconstruction.
    pub fn forward(&self, x_norm: &Tensor) -> Vec<LevelOutput> {
        self.forward_with(x_norm, true)
    }

    /// [`Hvq::forward`] with the decoders fed the unquantized projected latents (`quantize =
    /// false`, a warm-up before a k-means codebook initialisation): the tokens are still the
    /// nearest entries, the codebook and commitment terms are zero and carry no gradient.
    pub fn forward_with(&self, x_norm: &Tensor, quantize: bool) -> Vec<LevelOutput> {
        self.level_latents(x_norm)
            .iter()
            .enumerate()
            .map(|(l, z)| self.forward_level(l, z, quantize))
            .collect()
    }

    fn forward_level(&self, level: usize, z: &Tensor, quantize: bool) -> LevelOutput {
        let p = self.project(z);
        let tokens = self.nearest(&p);
        let (quantized, codebook_loss, commitment_loss) = if quantize {
            let e = self.lookup(&tokens);
            let codebook_loss = e.mse_loss(&p.detach(), Reduction::Mean);
            let commitment_loss = p.mse_loss(&e.detach(), Reduction::Mean);
            (&p + (&e - &p).detach(), codebook_loss, commitment_loss)
        } else {
            let zero = || Tensor::zeros([], (Kind::Float, p.device()));
            (p.shallow_clone(), zero(), zero())
        };
        let recon = self.decode(level, &quantized);
        LevelOutput {
            latent: p,
            tokens,
            quantized,
            recon,
            codebook_loss,
            commitment_loss,
        }
    }

    /// Runs `program` (one of [`Hvq::graph`]'s) from the `given` values to the `wanted` ones,
    /// node by node on batched NCHW tensors, dropping every value after its last reader.
    ///
    /// Panics when a value the wanted ones need is neither given nor computable (a program
    /// input not given): a caller's bug.
    pub fn run(
        &self,
        program: &Program,
        given: Vec<(Value, Tensor)>,
        wanted: &[Value],
    ) -> Vec<Tensor> {
        self.run_in(program, given, wanted, self.compute.kind)
    }

    /// [`Hvq::run`] with convolutions and attention computing in `kind`.
    fn run_in(
        &self,
        program: &Program,
        given: Vec<(Value, Tensor)>,
        wanted: &[Value],
        kind: Kind,
    ) -> Vec<Tensor> {
        let ids: Vec<Value> = given.iter().map(|(v, _)| *v).collect();
        let plan = program.schedule(wanted, &ids);
        let mut values: Vec<Option<Tensor>> = program.nodes.iter().map(|_| None).collect();
        for (v, t) in given {
            values[v.0] = Some(t);
        }
        for (&i, frees) in plan.order.iter().zip(&plan.frees) {
            let out = self.eval(program, &program.nodes[i], &values, kind);
            for v in frees {
                values[v.0] = None;
            }
            values[i] = Some(out);
        }
        wanted
            .iter()
            .map(|w| read(&values, *w).shallow_clone())
            .collect()
    }

    /// One node, on the values computed so far.
    fn eval(
        &self,
        program: &Program,
        node: &Node,
        values: &[Option<Tensor>],
        kind: Kind,
    ) -> Tensor {
        let x = |k: usize| read(values, node.inputs[k]);
        let (mean, std) = program.mean_std;
        match &node.op {
            Op::Input => panic!("{MISSING}"),
            Op::Normalize => normalize(x(0), mean, std),
            Op::Denormalize => denormalize(x(0), mean, std),
            Op::Conv {
                affine,
                params,
                norm,
            } => {
                let normed = norm.as_ref().map(|n| self.group_norm(x(0), n));
                let y = self.conv(normed.as_ref().unwrap_or(x(0)), affine, params, kind);
                match node.inputs.get(1) {
                    Some(&residual) => read(values, residual) + y,
                    None => y,
                }
            }
            Op::GroupNorm(n) => self.group_norm(x(0), n),
            Op::Add => x(0) + x(1),
            Op::AvgPool2 => x(0).avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>),
            Op::Subsample2 => {
                let (_, _, h, w) = x(0).size4().expect("NCHW input");
                x(0).slice(2, 0, h, 2).slice(3, 0, w, 2)
            }
            Op::Attention(a) => self.attention(x(0), a, kind),
            Op::NearestCode { codebook } => nearest(x(0), self.param(*codebook)),
            Op::GatherCode { codebook } => lookup(x(0), self.param(*codebook)),
        }
    }

    fn param(&self, id: ParamId) -> &Tensor {
        &self.params[id.0]
    }

    /// A convolution: nearest ×2 up-sampling first if asked, then zero padding (`k / 2` on all
    /// sides, or one row and column at the bottom and right before a stride-2 down-sampler).
    /// Inputs and parameters are cast to `kind` first (a no-op in f32).
    fn conv(&self, x: &Tensor, affine: &Affine, p: &Conv2dParams, kind: Kind) -> Tensor {
        let (x, w, b) = (
            in_kind(x, kind),
            in_kind(self.param(affine.weight), kind),
            in_kind(self.param(affine.bias), kind),
        );
        let (x, w, b) = (&x, &w, Some(&b));
        let upsampled = p.upsample.then(|| {
            let (_, _, h, w) = x.size4().expect("NCHW input");
            x.upsample_nearest2d([2 * h, 2 * w], None, None)
        });
        let x = upsampled.as_ref().unwrap_or(x);
        let stride = [p.stride as i64; 2];
        match p.padding {
            Padding::Same => {
                let k = w.size()[2];
                x.conv2d(w, b, stride, [k / 2; 2], [1, 1], 1)
            }
            Padding::DownsampleRightBottom => {
                let padded = x.constant_pad_nd([0, 1, 0, 1]);
                padded.conv2d(w, b, stride, [0, 0], [1, 1], 1)
            }
        }
    }

    /// GroupNorm with the graph's epsilon (the call `nn::GroupNorm` makes), then swish if asked;
    /// always in f32 (as autocast does), whatever the input's kind.
    fn group_norm(&self, x: &Tensor, n: &Norm) -> Tensor {
        let (gamma, beta) = (self.param(n.gamma), self.param(n.beta));
        let x = &in_kind(x, Kind::Float);
        // The f32 epsilon widened; libtorch's f32 kernels narrow it back to the same value.
        let eps = f64::from(graph::NORM_EPS);
        let y = x.group_norm(n.groups as i64, Some(gamma), Some(beta), eps, true);
        if n.swish { y.silu() } else { y }
    }

    /// `x + proj_out(attend(q, k, v))` with `q, k, v` 1×1 projections of `GroupNorm(x)`.
    fn attention(&self, x: &Tensor, a: &graph::Attention, kind: Kind) -> Tensor {
        let (b, c, h, w) = x.size4().expect("NCHW input");
        let hn = self.group_norm(x, &a.norm);
        let project = |affine: &Affine| self.conv(&hn, affine, &Conv2dParams::SAME, kind);
        let scale = (c as f64).powf(-0.5);
        let out = if self.compute.fused_attention {
            // One head of width C over the HW positions: [B, 1, HW, C].
            let heads = |t: Tensor| t.reshape([b, 1, c, h * w]).transpose(2, 3);
            let (q, k, v) = (
                heads(project(&a.q)),
                heads(project(&a.k)),
                heads(project(&a.v)),
            );
            Tensor::scaled_dot_product_attention::<Tensor>(
                &q,
                &k,
                &v,
                None,
                0.0,
                false,
                Some(scale),
                false,
            )
            .transpose(2, 3)
            .reshape([b, c, h, w])
        } else {
            let q = project(&a.q).reshape([b, c, h * w]).permute([0, 2, 1]);
            let k = project(&a.k).reshape([b, c, h * w]);
            let v = project(&a.v).reshape([b, c, h * w]);
            // [B, HW(query), HW(key)], softmax over key positions.
            let att = (q.bmm(&k) * scale)
                .softmax(2, Kind::Float)
                .to_kind(v.kind());
            v.bmm(&att.permute([0, 2, 1])).reshape([b, c, h, w])
        };
        x + self.conv(&out, &a.proj_out, &Conv2dParams::SAME, kind)
    }
}

/// `t` in `kind` (the same tensor when it already is).
fn in_kind(t: &Tensor, kind: Kind) -> Tensor {
    if t.kind() == kind {
        t.shallow_clone()
    } else {
        t.to_kind(kind)
    }
}

/// Why a program could not run: a value it reads was neither given nor computed.
const MISSING: &str = "a value the program reads was neither given nor computed";

fn read(values: &[Option<Tensor>], v: Value) -> &Tensor {
    values[v.0].as_ref().expect(MISSING)
}

fn output(p: &Program, which: Output) -> Value {
    p.output(which)
        .expect("every program of a valid config has its named outputs")
}

fn one(mut values: Vec<Tensor>) -> Tensor {
    values.pop().expect("one wanted value")
}

/// `(x − mean) / std` per channel of an NCHW batch.
fn normalize(x: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    (x - per_channel(mean, x)) / per_channel(std, x)
}

/// `clamp(y · std + mean, 0, 1)` per channel of an NCHW batch.
fn denormalize(y: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    (y * per_channel(std, y) + per_channel(mean, y)).clamp(0.0, 1.0)
}

fn per_channel(v: [f32; 3], like: &Tensor) -> Tensor {
    Tensor::from_slice(&v)
        .view([1, 3, 1, 1])
        .to_device(like.device())
}

/// Most elements of one block of the codebook distance matrix (512 MiB of f32): `paper` at batch
/// 40 has 163 840 positions × 20 000 entries, 13 GB for the whole matrix.
const DISTANCE_BLOCK: i64 = 1 << 27;

/// Nearest row of `codebook` `[N, D]` at every position of `p` `[B, D, h, w]`: i64 `[B, h, w]`,
/// ties to the lowest index.
fn nearest(p: &Tensor, codebook: &Tensor) -> Tensor {
    nearest_in_blocks(p, codebook, DISTANCE_BLOCK)
}

/// [`nearest`] over blocks of positions whose distances to every entry take at most `block`
/// elements (at least one position per block). A batch within one block computes exactly the
/// one-matrix expression.
fn nearest_in_blocks(p: &Tensor, codebook: &Tensor, block: i64) -> Tensor {
    tch::no_grad(|| {
        let (b, d, h, w) = p.size4().expect("NCHW latent");
        let flat = p.permute([0, 2, 3, 1]).reshape([-1, d]);
        let entries = codebook
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
            .unsqueeze(0);
        let argmin = |x: &Tensor| {
            let dist = x.square().sum_dim_intlist(1, true, Kind::Float)
                - x.matmul(&codebook.tr()) * 2.0
                + &entries;
            dist.argmin(1, false)
        };
        let rows = (block / codebook.size()[0].max(1)).max(1);
        let positions = flat.size()[0];
        let tokens = if positions <= rows {
            argmin(&flat)
        } else {
            let parts: Vec<Tensor> = (0..positions)
                .step_by(rows as usize)
                .map(|start| argmin(&flat.narrow(0, start, rows.min(positions - start))))
                .collect();
            Tensor::cat(&parts, 0)
        };
        tokens.view([b, h, w])
    })
}

/// The rows of `codebook` `[N, D]` that `tokens` i64 `[B, h, w]` name, as `[B, D, h, w]`.
fn lookup(tokens: &Tensor, codebook: &Tensor) -> Tensor {
    let (b, h, w) = tokens.size3().expect("[B, h, w] tokens");
    let d = codebook.size()[1];
    codebook
        .index_select(0, &tokens.reshape([-1]))
        .view([b, h, w, d])
        .permute([0, 3, 1, 2])
}

/// Each parameter's initialisation, from the op that reads it: tch's defaults for
/// `nn::conv2d` (Kaiming-uniform weight, zero bias) and `nn::group_norm` (one, zero), and
/// taming's codebook init, uniform in ±1/N (early distances are dominated by the latents).
fn initialisers(graph: &ModelGraph) -> Vec<nn::Init> {
    fn conv(init: &mut [Option<nn::Init>], a: &Affine) {
        init[a.weight.0] = Some(nn::init::DEFAULT_KAIMING_UNIFORM);
        init[a.bias.0] = Some(nn::Init::Const(0.0));
    }
    fn norm(init: &mut [Option<nn::Init>], n: &Norm) {
        init[n.gamma.0] = Some(nn::Init::Const(1.0));
        init[n.beta.0] = Some(nn::Init::Const(0.0));
    }
    let mut init = vec![None; graph.params.len()];
    let programs = std::iter::once(&graph.encoder).chain(&graph.decoders);
    for node in programs.flat_map(|p| &p.nodes) {
        match &node.op {
            Op::Conv {
                affine, norm: n, ..
            } => {
                conv(&mut init, affine);
                if let Some(n) = n {
                    norm(&mut init, n);
                }
            }
            Op::GroupNorm(n) => norm(&mut init, n),
            Op::Attention(a) => {
                norm(&mut init, &a.norm);
                for affine in [&a.q, &a.k, &a.v, &a.proj_out] {
                    conv(&mut init, affine);
                }
            }
            Op::NearestCode { codebook } | Op::GatherCode { codebook } => {
                let bound = 1.0 / graph.param(*codebook).shape[0] as f64;
                init[codebook.0] = Some(nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                });
            }
            // Parameter-free.
            Op::Input
            | Op::Normalize
            | Op::Denormalize
            | Op::Add
            | Op::AvgPool2
            | Op::Subsample2 => {}
        }
    }
    init.into_iter()
        .zip(&graph.params)
        .map(|(i, spec)| i.unwrap_or_else(|| panic!("no op reads parameter {}", spec.name)))
        .collect()
}

/// The order variables are created in, which fixes what a seed gives them: the schema's, except
/// that `encoder.conv_in` comes after the encoder's resolutions (`encoder.down.*`), where the
/// hand-written model this one replaced created it. Keeping that order keeps every seed's
/// initial weights (pinned by `train/tests/init.rs`).
fn creation_order(graph: &ModelGraph) -> Vec<usize> {
    let name = |i: usize| graph.params[i].name.as_str();
    let (conv_in, mut order): (Vec<usize>, Vec<usize>) =
        (0..graph.params.len()).partition(|&i| name(i).starts_with("encoder.conv_in."));
    let at = order
        .iter()
        .rposition(|&i| name(i).starts_with("encoder.down."))
        .map_or(0, |k| k + 1);
    order.splice(at..at, conv_in);
    order
}

/// Creates the variable of a dotted schema name (`encoder.conv_in.weight`) under `root`.
fn var(root: &nn::Path<'_>, name: &str, dims: &[i64], init: nn::Init) -> Tensor {
    let (dir, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    let path = dir
        .split('.')
        .filter(|s| !s.is_empty())
        .fold(root.clone(), |p, s| p / s);
    path.var(leaf, dims, init)
}

/// Re-initialises every convolution of `vs` the way PyTorch's `nn.Conv2d` does by default
/// (and so taming and the seed paper): weight and bias uniform in `±1/√fan_in`. GroupNorm
/// affine parameters and the codebook keep their values.
///
/// tch's default (Kaiming-uniform with the ReLU gain, bound `√(6/fan_in)`) has about 6× the
/// weight variance; in `avgpool(z) + downconv(z)` that lets the convolution dominate from the
/// first step. Variables are visited in name order, so the result is a function of libtorch's
/// RNG state alone.
pub fn torch_default_init(vs: &nn::VarStore) {
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    tch::no_grad(|| {
        for name in names {
            let Some(prefix) = name.strip_suffix(".weight") else {
                continue;
            };
            let mut w = vars[name].shallow_clone();
            if w.dim() != 4 {
                continue; // GroupNorm scale
            }
            let size = w.size();
            let bound = 1.0 / ((size[1] * size[2] * size[3]) as f64).sqrt();
            let _ = w.uniform_(-bound, bound);
            if let Some(b) = vars.get(&format!("{prefix}.bias")) {
                let _ = b.shallow_clone().uniform_(-bound, bound);
            }
        }
    });
}

/// Sets the level down-convolutions (`levels.*.down.conv`) to zero: with `pooling`, every
/// coarser latent then starts as the 2×2 average of the finer one, so all levels begin in the
/// same region of latent space and can share codebook entries. Returns how many tensors it set.
pub fn zero_level_downconvs(vs: &nn::VarStore) -> usize {
    let mut count = 0;
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            if name.starts_with("levels.") && name.contains(".down.conv.") {
                let _ = t.shallow_clone().zero_();
                count += 1;
            }
        }
    });
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Blocks of positions give the tokens of the one-matrix search.
    #[test]
    fn the_blocked_codebook_search_gives_the_same_tokens() {
        tch::manual_seed(3);
        let p = Tensor::randn([2, 8, 5, 7], (Kind::Float, Device::Cpu));
        let codebook = Tensor::randn([50, 8], (Kind::Float, Device::Cpu));
        let whole = nearest_in_blocks(&p, &codebook, i64::MAX);
        for block in [1, 50, 51, 333, 50 * 70] {
            assert!(
                nearest_in_blocks(&p, &codebook, block).equal(&whole),
                "block {block}"
            );
        }
        assert_eq!(whole.size(), [2, 5, 7]);
    }
}
