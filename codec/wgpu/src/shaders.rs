//! The static WGSL kernels and the binding layout each one declares.

/// How a kernel binds one resource (all in bind group 0, bindings numbered in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// `var<uniform>`: the kernel's shape parameters, mirrored by its struct in `uniforms.rs`.
    Uniform,
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`: the output.
    Write,
}

use Slot::{Read, Uniform, Write};

/// The element type of activations and convolution weights on the device.
///
/// Every kernel is one WGSL source written over the alias `act`; the precision picks what the
/// alias names (a two-line prelude, not a second copy of the shader). Whatever the precision,
/// the codebook, the quantizer's distances and argmin, GroupNorm statistics, biases and every
/// accumulator are f32, so f16 changes a token only where rounding the latent moves it across
/// a near-tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 everywhere: the backend that matches the CPU reference and libtorch (the default,
    /// and what browsers without `shader-f16` run).
    #[default]
    F32,
    /// f16 storage of activations and convolution weights (half the memory traffic and twice
    /// the batch per byte of device memory), f32 arithmetic. Needs the adapter's `shader-f16`
    /// feature ([`crate::GpuContext::supports_f16`]).
    F16,
}

impl Precision {
    /// Bytes of one activation.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// What a kernel's source is prefixed with.
    fn prelude(self) -> &'static str {
        match self {
            Precision::F32 => "alias act = f32;\n",
            Precision::F16 => "enable f16;\nalias act = f16;\n",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            other => Err(format!("unknown precision {other:?} (f32 or f16)")),
        }
    }
}

/// One kernel: its file stem, source, and binding slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Conv2d,
    GroupNormStats,
    GroupNormApply,
    Add,
    Resample,
    ChannelAffine,
    Attention,
    CodebookSearch,
    CodebookArgmin,
    CodebookGather,
}

impl Kernel {
    pub(crate) const ALL: [Kernel; 10] = [
        Kernel::Conv2d,
        Kernel::GroupNormStats,
        Kernel::GroupNormApply,
        Kernel::Add,
        Kernel::Resample,
        Kernel::ChannelAffine,
        Kernel::Attention,
        Kernel::CodebookSearch,
        Kernel::CodebookArgmin,
        Kernel::CodebookGather,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Conv2d => "conv2d",
            Kernel::GroupNormStats => "group_norm_stats",
            Kernel::GroupNormApply => "group_norm_apply",
            Kernel::Add => "add",
            Kernel::Resample => "resample",
            Kernel::ChannelAffine => "channel_affine",
            Kernel::Attention => "attention",
            Kernel::CodebookSearch => "codebook_search",
            Kernel::CodebookArgmin => "codebook_argmin",
            Kernel::CodebookGather => "codebook_gather",
        }
    }

    /// The compilable source for `precision`: the prelude that defines `act`, then the body.
    pub(crate) fn source(self, precision: Precision) -> String {
        format!("{}{}", precision.prelude(), self.body())
    }

    /// The kernel's file as written (it uses `act` without defining it).
    pub(crate) fn body(self) -> &'static str {
        match self {
            Kernel::Conv2d => include_str!("shaders/conv2d.wgsl"),
            Kernel::GroupNormStats => include_str!("shaders/group_norm_stats.wgsl"),
            Kernel::GroupNormApply => include_str!("shaders/group_norm_apply.wgsl"),
            Kernel::Add => include_str!("shaders/add.wgsl"),
            Kernel::Resample => include_str!("shaders/resample.wgsl"),
            Kernel::ChannelAffine => include_str!("shaders/channel_affine.wgsl"),
            Kernel::Attention => include_str!("shaders/attention.wgsl"),
            Kernel::CodebookSearch => include_str!("shaders/codebook_search.wgsl"),
            Kernel::CodebookArgmin => include_str!("shaders/codebook_argmin.wgsl"),
            Kernel::CodebookGather => include_str!("shaders/codebook_gather.wgsl"),
        }
    }

    /// Binding slots in binding order; must match the `@binding` declarations of the source.
    pub(crate) fn slots(self) -> &'static [Slot] {
        match self {
            // params, x, w, bias, residual, norm coefficients, out
            Kernel::Conv2d => &[Uniform, Read, Read, Read, Read, Read, Write],
            // params, x, gamma‖beta, norm coefficients
            Kernel::GroupNormStats => &[Uniform, Read, Read, Write],
            Kernel::GroupNormApply => &[Uniform, Read, Read, Write],
            Kernel::Add => &[Uniform, Read, Read, Write],
            Kernel::Resample => &[Uniform, Read, Write],
            Kernel::ChannelAffine => &[Uniform, Read, Read, Write],
            Kernel::Attention => &[Uniform, Read, Write],
            // params, p, codebook, tokens (or per-split winners), per-split distances
            Kernel::CodebookSearch => &[Uniform, Read, Read, Write, Write],
            // params, per-split winners, their distances, tokens
            Kernel::CodebookArgmin => &[Uniform, Read, Read, Write],
            Kernel::CodebookGather => &[Uniform, Read, Read, Write],
        }
    }
}

/// Override constants of one pipeline: a kernel is compiled once per distinct set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Overrides {
    /// conv2d: kernel size.
    pub ks: u32,
    /// conv2d: 0 plain input, 1 GroupNorm on the input, 2 GroupNorm then swish.
    pub norm: u32,
    /// conv2d: nearest x2 up-sampling of the input.
    pub upsample: bool,
    /// conv2d: residual add on the output.
    pub residual: bool,
    /// group_norm_apply: swish after the norm.
    pub swish: bool,
    /// channel_affine: clamp to [0, 1].
    pub clamp: bool,
    /// resample: 0 avg pool, 1 subsample, 2 nearest up-sample.
    pub mode: u32,
}

impl Overrides {
    /// The `(name, value)` pairs the kernel declares.
    pub(crate) fn constants(&self, kernel: Kernel) -> Vec<(&'static str, f64)> {
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        match kernel {
            Kernel::Conv2d => vec![
                ("KS", f64::from(self.ks)),
                ("NORM", f64::from(self.norm)),
                ("UPSAMPLE", b(self.upsample)),
                ("RESIDUAL", b(self.residual)),
            ],
            Kernel::GroupNormApply => vec![("SWISH", b(self.swish))],
            Kernel::ChannelAffine => vec![("CLAMP", b(self.clamp))],
            Kernel::Resample => vec![("MODE", f64::from(self.mode))],
            _ => Vec::new(),
        }
    }
}

impl Overrides {
    /// Every (kernel, overrides) pair this crate dispatches.
    pub(crate) fn all_variants() -> Vec<(Kernel, Overrides)> {
        let mut out = Vec::new();
        for ks in [1, 3] {
            for norm in 0..3 {
                for upsample in [false, true] {
                    for residual in [false, true] {
                        out.push((
                            Kernel::Conv2d,
                            Overrides {
                                ks,
                                norm,
                                upsample,
                                residual,
                                ..Default::default()
                            },
                        ));
                    }
                }
            }
        }
        for swish in [false, true] {
            out.push((
                Kernel::GroupNormApply,
                Overrides {
                    swish,
                    ..Default::default()
                },
            ));
        }
        for clamp in [false, true] {
            out.push((
                Kernel::ChannelAffine,
                Overrides {
                    clamp,
                    ..Default::default()
                },
            ));
        }
        for mode in 0..3 {
            out.push((
                Kernel::Resample,
                Overrides {
                    mode,
                    ..Default::default()
                },
            ));
        }
        for kernel in [
            Kernel::GroupNormStats,
            Kernel::Add,
            Kernel::Attention,
            Kernel::CodebookSearch,
            Kernel::CodebookArgmin,
            Kernel::CodebookGather,
        ] {
            out.push((kernel, Overrides::default()));
        }
        out
    }
}

/// File stems of every kernel this crate loads (for the shader-validation test).
pub fn shader_names() -> Vec<&'static str> {
    Kernel::ALL.iter().map(|k| k.name()).collect()
}

/// The source of the kernel in `<name>.wgsl` as compiled for `precision` (prelude and body),
/// or `None` for a name the crate does not load: what the shader-validation test parses.
pub fn shader_source(name: &str, precision: Precision) -> Option<String> {
    Kernel::ALL
        .iter()
        .find(|k| k.name() == name)
        .map(|k| k.source(precision))
}
