//! The hierarchical shared-codebook VQ-VAE of DESIGN.md §2 in tch.
//!
//! Every variable is created under the path the weight schema ([`hvq_spec::schema`]) gives
//! it, so a [`nn::VarStore`] of a [`Hvq`] holds exactly the schema's tensors.

use hvq_spec::{ModelConfig, Strategy};
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

/// GroupNorm epsilon fixed by the architecture (DESIGN.md §2).
const NORM_EPS: f64 = 1e-6;

fn conv(
    p: nn::Path<'_>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        ..Default::default()
    };
    nn::conv2d(p, cin as i64, cout as i64, k as i64, cfg)
}

fn norm(p: nn::Path<'_>, groups: usize, c: usize) -> nn::GroupNorm {
    let cfg = nn::GroupNormConfig {
        eps: NORM_EPS,
        ..Default::default()
    };
    nn::group_norm(p, groups as i64, c as i64, cfg)
}

/// Pad right and bottom by one zero, then a stride-2 3×3 convolution without padding.
#[derive(Debug)]
struct DownConv(nn::Conv2D);

impl DownConv {
    fn new(p: nn::Path<'_>, c: usize) -> Self {
        DownConv(conv(p, c, c, 3, 2, 0))
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        self.0.forward(&x.constant_pad_nd([0, 1, 0, 1]))
    }
}

/// Nearest ×2 up-sampling, then a 3×3 convolution with padding 1.
#[derive(Debug)]
struct UpConv(nn::Conv2D);

impl UpConv {
    fn new(p: nn::Path<'_>, c: usize) -> Self {
        UpConv(conv(p, c, c, 3, 1, 1))
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("NCHW input");
        self.0
            .forward(&x.upsample_nearest2d([2 * h, 2 * w], None, None))
    }
}

#[derive(Debug)]
struct ResBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    nin_shortcut: Option<nn::Conv2D>,
}

impl ResBlock {
    fn new(p: &nn::Path<'_>, groups: usize, cin: usize, cout: usize) -> Self {
        ResBlock {
            norm1: norm(p / "norm1", groups, cin),
            conv1: conv(p / "conv1", cin, cout, 3, 1, 1),
            norm2: norm(p / "norm2", groups, cout),
            conv2: conv(p / "conv2", cout, cout, 3, 1, 1),
            nin_shortcut: (cin != cout).then(|| conv(p / "nin_shortcut", cin, cout, 1, 1, 0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        match &self.nin_shortcut {
            Some(s) => s.forward(x) + h,
            None => x + h,
        }
    }
}

#[derive(Debug)]
struct Attn {
    norm: nn::GroupNorm,
    q: nn::Conv2D,
    k: nn::Conv2D,
    v: nn::Conv2D,
    proj_out: nn::Conv2D,
}

impl Attn {
    fn new(p: &nn::Path<'_>, groups: usize, c: usize) -> Self {
        Attn {
            norm: norm(p / "norm", groups, c),
            q: conv(p / "q", c, c, 1, 1, 0),
            k: conv(p / "k", c, c, 1, 1, 0),
            v: conv(p / "v", c, c, 1, 1, 0),
            proj_out: conv(p / "proj_out", c, c, 1, 1, 0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("NCHW input");
        let hn = self.norm.forward(x);
        let q = self
            .q
            .forward(&hn)
            .reshape([b, c, h * w])
            .permute([0, 2, 1]);
        let k = self.k.forward(&hn).reshape([b, c, h * w]);
        let v = self.v.forward(&hn).reshape([b, c, h * w]);
        // [B, HW(query), HW(key)], softmax over key positions.
        let att = (q.bmm(&k) * (c as f64).powf(-0.5)).softmax(2, Kind::Float);
        let out = v.bmm(&att.permute([0, 2, 1])).reshape([b, c, h, w]);
        x + self.proj_out.forward(&out)
    }
}

#[derive(Debug)]
struct Mid {
    block_1: ResBlock,
    attn_1: Option<Attn>,
    block_2: ResBlock,
}

impl Mid {
    fn new(p: &nn::Path<'_>, groups: usize, c: usize, attention: bool) -> Self {
        Mid {
            block_1: ResBlock::new(&(p / "block_1"), groups, c, c),
            attn_1: attention.then(|| Attn::new(&(p / "attn_1"), groups, c)),
            block_2: ResBlock::new(&(p / "block_2"), groups, c, c),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.block_1.forward(x);
        if let Some(a) = &self.attn_1 {
            h = a.forward(&h);
        }
        self.block_2.forward(&h)
    }
}

/// One resolution of the encoder or one stage of a decoder.
#[derive(Debug)]
struct Stage {
    blocks: Vec<ResBlock>,
    down: Option<DownConv>,
    up: Option<UpConv>,
}

#[derive(Debug)]
struct Encoder {
    conv_in: nn::Conv2D,
    stages: Vec<Stage>,
    mid: Mid,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl Encoder {
    fn new(p: &nn::Path<'_>, cfg: &ModelConfig) -> Self {
        let g = cfg.norm_groups;
        let ch = cfg.channels;
        let last = cfg.channel_mult.len() - 1;
        let mut block_in = ch;
        let mut stages = Vec::new();
        for (i, &mult) in cfg.channel_mult.iter().enumerate() {
            let sp = p / "down" / i;
            let block_out = ch * mult;
            let mut blocks = Vec::new();
            for j in 0..cfg.num_res_blocks {
                blocks.push(ResBlock::new(&(&sp / "block" / j), g, block_in, block_out));
                block_in = block_out;
            }
            let down = (i != last).then(|| DownConv::new(&sp / "downsample" / "conv", block_in));
            stages.push(Stage {
                blocks,
                down,
                up: None,
            });
        }
        Encoder {
            conv_in: conv(p / "conv_in", cfg.in_channels, ch, 3, 1, 1),
            stages,
            mid: Mid::new(&(p / "mid"), g, block_in, cfg.mid_attention),
            norm_out: norm(p / "norm_out", g, block_in),
            conv_out: conv(p / "conv_out", block_in, cfg.z_channels, 3, 1, 1),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(x);
        for s in &self.stages {
            for b in &s.blocks {
                h = b.forward(&h);
            }
            if let Some(d) = &s.down {
                h = d.forward(&h);
            }
        }
        let h = self.mid.forward(&h);
        self.conv_out.forward(&self.norm_out.forward(&h).silu())
    }
}

#[derive(Debug)]
struct Decoder {
    conv_in: nn::Conv2D,
    mid: Mid,
    stages: Vec<Stage>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl Decoder {
    fn new(p: &nn::Path<'_>, cfg: &ModelConfig, level: usize) -> Self {
        let g = cfg.norm_groups;
        let mults = cfg.decoder_stage_mults(level);
        let mut block_in = cfg.channels * mults[0];
        let conv_in = conv(p / "conv_in", cfg.codebook_dim, block_in, 3, 1, 1);
        let mid = Mid::new(&(p / "mid"), g, block_in, cfg.mid_attention);
        let last = mults.len() - 1;
        let mut stages = Vec::new();
        for (s, &mult) in mults.iter().enumerate() {
            let sp = p / "up" / s;
            let block_out = cfg.channels * mult;
            let mut blocks = Vec::new();
            for j in 0..cfg.decoder_res_blocks {
                blocks.push(ResBlock::new(&(&sp / "block" / j), g, block_in, block_out));
                block_in = block_out;
            }
            let up = (s != last).then(|| UpConv::new(&sp / "upsample" / "conv", block_in));
            stages.push(Stage {
                blocks,
                down: None,
                up,
            });
        }
        Decoder {
            conv_in,
            mid,
            stages,
            norm_out: norm(p / "norm_out", g, block_in),
            conv_out: conv(p / "conv_out", block_in, cfg.in_channels, 3, 1, 1),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.mid.forward(&self.conv_in.forward(x));
        for s in &self.stages {
            for b in &s.blocks {
                h = b.forward(&h);
            }
            if let Some(u) = &s.up {
                h = u.forward(&h);
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h).silu())
    }
}

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

/// The whole model: encoder, level derivation, shared quantizer, one decoder per level.
#[derive(Debug)]
pub struct Hvq {
    cfg: ModelConfig,
    encoder: Encoder,
    /// `downs[l - 1]` derives level `l` (only for strategies with a learned down-conv).
    downs: Vec<DownConv>,
    proj: nn::Conv2D,
    codebook: Tensor,
    decoders: Vec<Decoder>,
}

impl Hvq {
    /// Creates every variable of `cfg` under `root`, named as in the weight schema.
    ///
    /// The config must be valid ([`ModelConfig::validate`]); call sites validate first.
    pub fn new(root: &nn::Path<'_>, cfg: &ModelConfig) -> Self {
        let encoder = Encoder::new(&(root / "encoder"), cfg);
        let downs = if cfg.strategy.has_downconv() {
            (1..cfg.levels)
                .map(|l| DownConv::new(root / "levels" / l / "down" / "conv", cfg.z_channels))
                .collect()
        } else {
            Vec::new()
        };
        let q = root / "quantizer";
        let proj = conv(&q / "proj", cfg.z_channels, cfg.codebook_dim, 1, 1, 0);
        // taming's init: uniform in ±1/N keeps early distances dominated by the latents.
        let bound = 1.0 / cfg.codebook_size as f64;
        let codebook = q.var(
            "codebook",
            &[cfg.codebook_size as i64, cfg.codebook_dim as i64],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let decoders = (0..cfg.levels)
            .map(|l| Decoder::new(&(root / "decoders" / l), cfg, l))
            .collect();
        Hvq {
            cfg: cfg.clone(),
            encoder,
            downs,
            proj,
            codebook,
            decoders,
        }
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The shared codebook variable `[N, D]`.
    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    /// Maps `[0, 1]` pixels to the model's normalized input space.
    pub fn normalize(&self, x01: &Tensor) -> Tensor {
        let (mean, std) = self.mean_std(x01);
        (x01 - mean) / std
    }

    /// Maps normalized outputs back to `[0, 1]` pixels, clamped.
    pub fn denormalize(&self, y: &Tensor) -> Tensor {
        let (mean, std) = self.mean_std(y);
        (y * std + mean).clamp(0.0, 1.0)
    }

    fn mean_std(&self, like: &Tensor) -> (Tensor, Tensor) {
        let t = |v: [f32; 3]| {
            Tensor::from_slice(&v)
                .view([1, 3, 1, 1])
                .to_device(like.device())
        };
        (t(self.cfg.mean), t(self.cfg.std))
    }

    /// Encoder output per level (`z_l`, before projection), finest first.
    pub fn level_latents(&self, x_norm: &Tensor) -> Vec<Tensor> {
        let mut zs = vec![self.encoder.forward(x_norm)];
        for l in 1..self.cfg.levels {
            let z = &zs[l - 1];
            zs.push(self.derive(l, z));
        }
        zs
    }

    fn derive(&self, level: usize, z: &Tensor) -> Tensor {
        let pool = || z.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
        match self.cfg.strategy {
            Strategy::Pooling => pool() + self.downs[level - 1].forward(z),
            Strategy::Sampling => {
                let (_, _, h, w) = z.size4().expect("NCHW latent");
                z.slice(2, 0, h, 2).slice(3, 0, w, 2)
            }
            Strategy::Avgpool => pool(),
            Strategy::Convpool => self.downs[level - 1].forward(z),
        }
    }

    /// Projects a latent `z_l` into codebook space: `p_l`.
    pub fn project(&self, z: &Tensor) -> Tensor {
        self.proj.forward(z)
    }

    /// Nearest codebook entry of every position of `p` `[B, D, h, w]`: i64 `[B, h, w]`.
    ///
    /// Ties go to the lowest index (`argmin` returns the first minimum).
    pub fn nearest(&self, p: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let (b, d, h, w) = p.size4().expect("NCHW latent");
            let flat = p.permute([0, 2, 3, 1]).reshape([-1, d]);
            let cb = &self.codebook;
            let dist = flat.square().sum_dim_intlist(1, true, Kind::Float)
                - flat.matmul(&cb.tr()) * 2.0
                + cb.square()
                    .sum_dim_intlist(1, false, Kind::Float)
                    .unsqueeze(0);
            dist.argmin(1, false).view([b, h, w])
        })
    }

    /// Codebook entries of `tokens` i64 `[B, h, w]` as a `[B, D, h, w]` latent.
    pub fn lookup(&self, tokens: &Tensor) -> Tensor {
        let (b, h, w) = tokens.size3().expect("[B, h, w] tokens");
        self.codebook
            .index_select(0, &tokens.reshape([-1]))
            .view([b, h, w, self.cfg.codebook_dim as i64])
            .permute([0, 3, 1, 2])
    }

    /// Reconstruction (normalized units) of level `level` from a quantized latent.
    pub fn decode(&self, level: usize, quantized: &Tensor) -> Tensor {
        self.decoders[level].forward(quantized)
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
