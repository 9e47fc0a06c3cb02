//! The one weight-name schema (DESIGN.md §4): every tensor a model of a given
//! [`ModelConfig`] owns, with its hierarchical name and shape, in a fixed order.
//!
//! The trainer names its variables by walking the same structure (a test checks both
//! are the same set) and the codec loader asks for exactly these names.

use crate::ModelConfig;

/// One expected tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Dotted path, e.g. `encoder.down.0.block.1.conv1.weight`.
    pub name: String,
    /// Expected shape (convolutions OIHW).
    pub shape: Vec<usize>,
}

/// Builds the list of tensors by walking the model structure.
struct Collector {
    out: Vec<TensorSpec>,
}

impl Collector {
    fn push(&mut self, name: String, shape: Vec<usize>) {
        self.out.push(TensorSpec { name, shape });
    }

    fn conv(&mut self, prefix: &str, cin: usize, cout: usize, k: usize) {
        self.push(format!("{prefix}.weight"), vec![cout, cin, k, k]);
        self.push(format!("{prefix}.bias"), vec![cout]);
    }

    fn norm(&mut self, prefix: &str, c: usize) {
        self.push(format!("{prefix}.weight"), vec![c]);
        self.push(format!("{prefix}.bias"), vec![c]);
    }

    fn res_block(&mut self, prefix: &str, cin: usize, cout: usize) {
        self.norm(&format!("{prefix}.norm1"), cin);
        self.conv(&format!("{prefix}.conv1"), cin, cout, 3);
        self.norm(&format!("{prefix}.norm2"), cout);
        self.conv(&format!("{prefix}.conv2"), cout, cout, 3);
        if cin != cout {
            self.conv(&format!("{prefix}.nin_shortcut"), cin, cout, 1);
        }
    }

    fn attn(&mut self, prefix: &str, c: usize) {
        self.norm(&format!("{prefix}.norm"), c);
        for part in ["q", "k", "v", "proj_out"] {
            self.conv(&format!("{prefix}.{part}"), c, c, 1);
        }
    }

    fn mid(&mut self, prefix: &str, c: usize, attention: bool) {
        self.res_block(&format!("{prefix}.block_1"), c, c);
        if attention {
            self.attn(&format!("{prefix}.attn_1"), c);
        }
        self.res_block(&format!("{prefix}.block_2"), c, c);
    }
}

/// Every tensor of a model with configuration `cfg`, in canonical order.
pub fn tensors(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let mut c = Collector { out: Vec::new() };
    encoder(&mut c, cfg);
    for level in 1..cfg.levels {
        if cfg.strategy.has_downconv() {
            c.conv(
                &format!("levels.{level}.down.conv"),
                cfg.z_channels,
                cfg.z_channels,
                3,
            );
        }
    }
    c.conv("quantizer.proj", cfg.z_channels, cfg.codebook_dim, 1);
    c.push(
        "quantizer.codebook".into(),
        vec![cfg.codebook_size, cfg.codebook_dim],
    );
    for level in 0..cfg.levels {
        decoder(&mut c, cfg, level);
    }
    c.out
}

fn encoder(c: &mut Collector, cfg: &ModelConfig) {
    let ch = cfg.channels;
    c.conv("encoder.conv_in", cfg.in_channels, ch, 3);
    let mut block_in = ch;
    let last = cfg.channel_mult.len() - 1;
    for (i, &mult) in cfg.channel_mult.iter().enumerate() {
        let block_out = ch * mult;
        for j in 0..cfg.num_res_blocks {
            c.res_block(&format!("encoder.down.{i}.block.{j}"), block_in, block_out);
            block_in = block_out;
        }
        if i != last {
            c.conv(
                &format!("encoder.down.{i}.downsample.conv"),
                block_in,
                block_in,
                3,
            );
        }
    }
    c.mid("encoder.mid", block_in, cfg.mid_attention);
    c.norm("encoder.norm_out", block_in);
    c.conv("encoder.conv_out", block_in, cfg.z_channels, 3);
}

fn decoder(c: &mut Collector, cfg: &ModelConfig, level: usize) {
    let p = format!("decoders.{level}");
    let mults = cfg.decoder_stage_mults(level);
    let mut block_in = cfg.channels * mults[0];
    c.conv(&format!("{p}.conv_in"), cfg.codebook_dim, block_in, 3);
    c.mid(&format!("{p}.mid"), block_in, cfg.mid_attention);
    let last = mults.len() - 1;
    for (s, &mult) in mults.iter().enumerate() {
        let block_out = cfg.channels * mult;
        for j in 0..cfg.decoder_res_blocks {
            c.res_block(&format!("{p}.up.{s}.block.{j}"), block_in, block_out);
            block_in = block_out;
        }
        if s != last {
            c.conv(&format!("{p}.up.{s}.upsample.conv"), block_in, block_in, 3);
        }
    }
    c.norm(&format!("{p}.norm_out"), block_in);
    c.conv(&format!("{p}.conv_out"), block_in, cfg.in_channels, 3);
}

/// Total parameter count of a model with configuration `cfg`.
pub fn parameter_count(cfg: &ModelConfig) -> usize {
    tensors(cfg)
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}
