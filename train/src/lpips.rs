//! LPIPS v0.1 (Zhang et al. 2018), the learned perceptual distance, in libtorch.
//!
//! Two backbones: AlexNet (the evaluation metric) and VGG16 (the perceptual training loss of
//! the seed paper and VQGAN). Weights come from `shared/data/lpips/{alexnet,vgg16}.safetensors`
//! (tensor names `features.Conv_K.{weight,bias}` and `linK.weight`) and are frozen: no gradient
//! reaches them, but gradients flow through the network to the inputs.
//!
//! ```no_run
//! use hvq_train::lpips::{Lpips, Net};
//! # fn main() -> Result<(), hvq_train::TrainError> {
//! let lpips = Lpips::load("../shared/data/lpips/alexnet.safetensors".as_ref(), Net::Alex, tch::Device::Cpu)?;
//! let a = tch::Tensor::rand([1, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
//! let d = lpips.forward(&a, &a.flip([3])); // shape [1]
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::TrainError;

/// The LPIPS input shift, applied after scaling to [-1, 1] (per RGB channel).
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
/// The LPIPS input scale, applied after the shift (per RGB channel).
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// Added to the feature norm, as in the reference implementation.
const NORM_EPS: f64 = 1e-10;

/// The LPIPS backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// AlexNet: five taps; the standard evaluation metric (`alexnet.safetensors`).
    Alex,
    /// VGG16: five taps; the perceptual training loss (`vgg16.safetensors`).
    Vgg,
}

/// One convolution of a backbone: `features.Conv_{index}`, with its stride and padding.
#[derive(Debug, Clone, Copy)]
struct ConvSpec {
    index: usize,
    kernel: i64,
    stride: i64,
    pad: i64,
}

/// The layers between two taps: an optional max-pool `(kernel, stride)`, then conv+ReLU pairs.
#[derive(Debug, Clone)]
struct StageSpec {
    pool: Option<(i64, i64)>,
    convs: Vec<ConvSpec>,
}

impl Net {
    /// The backbone as five stages, each ending at a tap (see shared/data/README.md).
    fn stages(self) -> Vec<StageSpec> {
        let c = |index, kernel, stride, pad| ConvSpec {
            index,
            kernel,
            stride,
            pad,
        };
        match self {
            Net::Alex => vec![
                StageSpec {
                    pool: None,
                    convs: vec![c(0, 11, 4, 2)],
                },
                StageSpec {
                    pool: Some((3, 2)),
                    convs: vec![c(1, 5, 1, 2)],
                },
                StageSpec {
                    pool: Some((3, 2)),
                    convs: vec![c(2, 3, 1, 1)],
                },
                StageSpec {
                    pool: None,
                    convs: vec![c(3, 3, 1, 1)],
                },
                StageSpec {
                    pool: None,
                    convs: vec![c(4, 3, 1, 1)],
                },
            ],
            Net::Vgg => {
                let groups: [&[usize]; 5] =
                    [&[0, 1], &[2, 3], &[4, 5, 6], &[7, 8, 9], &[10, 11, 12]];
                groups
                    .iter()
                    .enumerate()
                    .map(|(k, idx)| StageSpec {
                        pool: (k > 0).then_some((2, 2)),
                        convs: idx.iter().map(|&i| c(i, 3, 1, 1)).collect(),
                    })
                    .collect()
            }
        }
    }

    /// Output channels of each convolution, in order.
    fn channels(self) -> &'static [i64] {
        match self {
            Net::Alex => &[64, 192, 384, 256, 256],
            Net::Vgg => &[
                64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512,
            ],
        }
    }

    /// Forward FLOPs (2 per multiply-add) of the backbone's convolutions on one
    /// `width`×`height` image, walking [`Net::stages`] with their strides, paddings and
    /// (floor-mode) max-pools. The 1×1 `lin` heads, ReLU, pooling and the distance itself are
    /// left out (under 0.1 % for VGG).
    pub fn forward_flops(self, width: u64, height: u64) -> u64 {
        let channels = self.channels();
        // Output side of a window of `k` at stride `s` after `p` padding (floor, as PyTorch).
        let out = |side: u64, k: i64, s: i64, p: i64| {
            let span = side as i64 + 2 * p - k;
            if span < 0 { 0 } else { (span / s) as u64 + 1 }
        };
        let (mut w, mut h) = (width, height);
        let mut flops = 0;
        for stage in self.stages() {
            if let Some((k, s)) = stage.pool {
                (w, h) = (out(w, k, s, 0), out(h, k, s, 0));
            }
            for c in &stage.convs {
                let cin = if c.index == 0 {
                    3
                } else {
                    channels[c.index - 1]
                } as u64;
                let cout = channels[c.index] as u64;
                (w, h) = (
                    out(w, c.kernel, c.stride, c.pad),
                    out(h, c.kernel, c.stride, c.pad),
                );
                flops += 2 * cin * cout * (c.kernel * c.kernel) as u64 * w * h;
            }
        }
        flops
    }

    /// The smallest input side for which every layer has a non-empty output.
    pub fn min_size(self) -> i64 {
        match self {
            // 31 → conv(11, s4, p2) 7 → pool 3 → pool 1.
            Net::Alex => 31,
            // Four 2×2 pools need 16 pixels to leave one.
            Net::Vgg => 16,
        }
    }

    /// The usual file name of this backbone's weights in `shared/data/lpips/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Net::Alex => "alexnet.safetensors",
            Net::Vgg => "vgg16.safetensors",
        }
    }
}

/// A loaded convolution: weight OIHW, bias, and how to apply it.
#[derive(Debug)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    spec: ConvSpec,
}

/// A stage of loaded layers ending at a tap, with the tap's linear head `[1, C, 1, 1]`.
#[derive(Debug)]
struct Stage {
    pool: Option<(i64, i64)>,
    convs: Vec<Conv>,
    lin: Tensor,
}

/// The LPIPS v0.1 distance with frozen weights.
#[derive(Debug)]
pub struct Lpips {
    net: Net,
    stages: Vec<Stage>,
    shift: Tensor,
    scale: Tensor,
    device: Device,
}

impl Lpips {
    /// Loads the weights of `net` from a safetensors file onto `device`.
    ///
    /// Every expected tensor is checked by name and shape before use.
    ///
    /// Errors: [`TrainError::MissingLpips`] when `path` does not exist,
    /// [`TrainError::Torch`] when it is not a readable safetensors file,
    /// [`TrainError::LpipsTensor`] when a tensor is absent or has the wrong shape.
    pub fn load(path: &Path, net: Net, device: Device) -> Result<Lpips, TrainError> {
        if !path.is_file() {
            return Err(TrainError::MissingLpips {
                path: path.to_path_buf(),
            });
        }
        let mut named: HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let mut take =
            |name: String, shape: Vec<i64>| take_tensor(&mut named, path, name, &shape, device);
        let channels = net.channels();
        let mut stages = Vec::with_capacity(5);
        for (k, spec) in net.stages().into_iter().enumerate() {
            let mut convs = Vec::with_capacity(spec.convs.len());
            for c in &spec.convs {
                let cin = if c.index == 0 {
                    3
                } else {
                    channels[c.index - 1]
                };
                let cout = channels[c.index];
                let weight = take(
                    format!("features.Conv_{}.weight", c.index),
                    vec![cout, cin, c.kernel, c.kernel],
                )?;
                let bias = take(format!("features.Conv_{}.bias", c.index), vec![cout])?;
                convs.push(Conv {
                    weight,
                    bias,
                    spec: *c,
                });
            }
            let tap_channels = channels[spec.convs.last().map_or(0, |c| c.index)];
            let lin = take(format!("lin{k}.weight"), vec![1, tap_channels, 1, 1])?;
            stages.push(Stage {
                pool: spec.pool,
                convs,
                lin,
            });
        }
        let per_channel = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
        Ok(Lpips {
            net,
            stages,
            shift: per_channel(SHIFT),
            scale: per_channel(SCALE),
            device,
        })
    }

    /// Runs the backbone's convolutions in `kind` (`Kind::BFloat16` for a faster training
    /// loss on a GPU); feature normalization and distances stay f32.
    pub fn set_conv_kind(&mut self, kind: Kind) {
        for stage in &mut self.stages {
            for c in &mut stage.convs {
                c.weight = c.weight.to_kind(kind);
                c.bias = c.bias.to_kind(kind);
            }
        }
    }

    /// The backbone these weights belong to.
    pub fn net(&self) -> Net {
        self.net
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// LPIPS distance between two batches `[B, 3, H, W]` of images in [0, 1]; returns `[B]`.
    ///
    /// Differentiable with respect to both inputs (for the training loss). Inputs are moved to
    /// the weights' device and computed in f32.
    ///
    /// # Panics
    /// Like any tch operation, when the inputs are not both `[B, 3, H, W]` of the same shape
    /// with `H, W ≥ Net::min_size`; [`Lpips::f_forward`] checks that and returns an error instead.
    pub fn forward(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let batch = a.size()[0];
        let both = Tensor::cat(&[self.normalize(a), self.normalize(b)], 0);
        let mut total: Option<Tensor> = None;
        let mut x = both;
        for stage in &self.stages {
            x = stage.apply(x);
            let d = tap_distance(&x, batch, &stage.lin);
            total = Some(match total {
                Some(t) => t + d,
                None => d,
            });
        }
        total.unwrap_or_else(|| Tensor::zeros([batch], (Kind::Float, self.device)))
    }

    /// The reference side of a distance, computed once without gradient: the unit-normalized
    /// features of `b` `[B, 3, H, W]` (in [0, 1]) at every tap. A training step compares each
    /// level's reconstruction with the same target, so its features need computing only once
    /// and need no backward pass.
    pub fn target(&self, b: &Tensor) -> LpipsTarget {
        tch::no_grad(|| {
            let mut x = self.normalize(b);
            let mut taps = Vec::with_capacity(self.stages.len());
            for stage in &self.stages {
                let (y, f) = stage.tap(x);
                taps.push(unit_normalize(&f));
                x = y;
            }
            LpipsTarget {
                batch: b.size()[0],
                taps,
            }
        })
    }

    /// LPIPS distance of every image of `a` `[k·B, 3, H, W]` (in [0, 1]) to the target image of
    /// the same index modulo `B`; returns `[k·B]`. Several batches (one per level) go through the
    /// network in one pass; gradients flow to `a` only.
    ///
    /// # Panics
    /// When `a`'s batch is not a multiple of the target's, or its image size differs from the
    /// target's (a caller's bug; [`Lpips::forward`]'s shape rules apply otherwise).
    pub fn distance_to(&self, a: &Tensor, target: &LpipsTarget) -> Tensor {
        let n = a.size()[0];
        assert!(
            target.batch > 0 && n % target.batch == 0,
            "LPIPS: a batch of {n} against a target of {}",
            target.batch
        );
        let k = n / target.batch;
        let mut x = self.normalize(a);
        let mut total: Option<Tensor> = None;
        for (stage, tb) in self.stages.iter().zip(&target.taps) {
            let (y, f) = stage.tap(x);
            x = y;
            let fa = unit_normalize(&f);
            let s = fa.size();
            // [k, B, C, h, w] against [1, B, C, h, w]: each level against the same target.
            let diff = (fa.view([k, target.batch, s[1], s[2], s[3]]) - tb.unsqueeze(0))
                .square()
                .view([n, s[1], s[2], s[3]]);
            let d = diff
                .conv2d::<Tensor>(&stage.lin, None, [1, 1], [0, 0], [1, 1], 1)
                .mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
            total = Some(match total {
                Some(t) => t + d,
                None => d,
            });
        }
        total.unwrap_or_else(|| Tensor::zeros([n], (Kind::Float, self.device)))
    }

    /// [`Lpips::forward`] after checking the shapes.
    ///
    /// Errors: [`TrainError::ShapeMismatch`] when the shapes differ or are not `[B, 3, H, W]`,
    /// [`TrainError::ImageTooSmall`] when a side is below [`Net::min_size`].
    pub fn f_forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, TrainError> {
        let (sa, sb) = (a.size(), b.size());
        if sa != sb || sa.len() != 4 || sa[1] != 3 {
            return Err(TrainError::ShapeMismatch {
                what: "LPIPS inputs [B, 3, H, W]",
                a: sa,
                b: sb,
            });
        }
        let min = self.net.min_size();
        if sa[2] < min || sa[3] < min {
            return Err(TrainError::ImageTooSmall {
                what: "LPIPS",
                min,
                height: sa[2],
                width: sa[3],
            });
        }
        Ok(self.forward(a, b))
    }

    /// [0, 1] → [-1, 1] → `(x - shift) / scale`, in f32 on the weights' device.
    fn normalize(&self, x: &Tensor) -> Tensor {
        let x = x.to_device(self.device).to_kind(Kind::Float);
        ((x * 2.0 - 1.0) - &self.shift) / &self.scale
    }
}

/// A batch's features at every tap, unit-normalized, for [`Lpips::distance_to`].
#[derive(Debug)]
pub struct LpipsTarget {
    batch: i64,
    taps: Vec<Tensor>,
}

impl Stage {
    /// The stage's layers in its weights' kind; the tap's features come out in f32.
    fn apply(&self, mut x: Tensor) -> Tensor {
        if let Some(c) = self.convs.first()
            && x.kind() != c.weight.kind()
        {
            x = x.to_kind(c.weight.kind());
        }
        if let Some((k, s)) = self.pool {
            x = x.max_pool2d([k, k], [s, s], [0, 0], [1, 1], false);
        }
        for c in &self.convs {
            let (s, p) = (c.spec.stride, c.spec.pad);
            x = x
                .conv2d(&c.weight, Some(&c.bias), [s, s], [p, p], [1, 1], 1)
                .relu();
        }
        x
    }

    /// [`Stage::apply`] with the output in f32 for the distance, and the input of the next
    /// stage in the weights' kind.
    fn tap(&self, x: Tensor) -> (Tensor, Tensor) {
        let y = self.apply(x);
        let f = if y.kind() == Kind::Float {
            y.shallow_clone()
        } else {
            y.to_kind(Kind::Float)
        };
        (y, f)
    }
}

/// The LPIPS term of one tap: features of the first `batch` images against the rest.
fn tap_distance(features: &Tensor, batch: i64, lin: &Tensor) -> Tensor {
    let f = unit_normalize(features);
    let (fa, fb) = (f.narrow(0, 0, batch), f.narrow(0, batch, batch));
    let diff = (fa - fb).square();
    diff.conv2d::<Tensor>(lin, None, [1, 1], [0, 0], [1, 1], 1)
        .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
}

/// Divides each feature vector (over channels) by its L2 norm + 1e-10.
///
/// The `1e-20` under the square root does not change any norm representable next to a
/// non-zero feature, but keeps the gradient finite (zero) at an all-zero feature vector,
/// where `d sqrt(s)/ds` would be infinite and give NaN.
fn unit_normalize(f: &Tensor) -> Tensor {
    let norm = (f.square().sum_dim_intlist(&[1i64][..], true, Kind::Float) + 1e-20).sqrt();
    f / (norm + NORM_EPS)
}

/// Removes `name` from `named`, checks its shape, and returns it frozen on `device` in f32.
fn take_tensor(
    named: &mut HashMap<String, Tensor>,
    path: &Path,
    name: String,
    shape: &[i64],
    device: Device,
) -> Result<Tensor, TrainError> {
    let bad = |got| TrainError::LpipsTensor {
        path: PathBuf::from(path),
        tensor: name.clone(),
        expected: shape.to_vec(),
        got,
    };
    let t = match named.remove(&name) {
        Some(t) => t,
        None => {
            let q = named.remove(&format!("{name}{INT8_SUFFIX}"));
            let scale = named.remove(&format!("{name}{SCALE_SUFFIX}"));
            match (q, scale) {
                (Some(q), Some(scale)) => {
                    dequantize_int8(&q, &scale).ok_or_else(|| bad(Some(q.size())))?
                }
                _ => return Err(bad(None)),
            }
        }
    };
    if t.size() != shape {
        return Err(bad(Some(t.size())));
    }
    Ok(t.to_kind(Kind::Float)
        .to_device(device)
        .set_requires_grad(false))
}

/// Name suffix of a weight stored in int8 by [`quantize_int8`] (`hvq-train half --int8`).
pub const INT8_SUFFIX: &str = ".q8";
/// Name suffix of its f32 scales, one per output channel (the first dimension).
pub const SCALE_SUFFIX: &str = ".q8scale";

/// Symmetric int8 quantization with one scale per output channel: `(q, scale)` with
/// `t ≈ q * scale[c]` and an error of at most `scale[c] / 2`. A quarter of f32, for a GPU machine's
/// upload limit; LPIPS reads such files back through [`Lpips::load`].
pub fn quantize_int8(t: &Tensor) -> (Tensor, Tensor) {
    let t = t.to_kind(Kind::Float);
    let rows = t.flatten(1, -1);
    // f32::MIN_POSITIVE keeps an all-zero channel finite (its values quantize to 0).
    let scale = rows
        .abs()
        .amax([1], false)
        .clamp_min(f64::from(f32::MIN_POSITIVE))
        / 127.0;
    let q = (rows / scale.unsqueeze(1))
        .round()
        .clamp(-127, 127)
        .to_kind(Kind::Int8);
    (q.view(t.size().as_slice()), scale)
}

/// The tensors of a weight file made smaller for a GPU machine's upload limit
/// (`hvq-train half`): every float tensor in f16, or with `int8` every 4-D one (the
/// convolutions) by [`quantize_int8`] as `NAME.q8` + `NAME.q8scale`. [`Lpips::load`] reads both.
pub fn compact_tensors(tensors: Vec<(String, Tensor)>, int8: bool) -> Vec<(String, Tensor)> {
    let mut out = Vec::with_capacity(tensors.len());
    for (n, t) in tensors {
        if int8 && t.is_floating_point() && t.dim() == 4 {
            let (q, scale) = quantize_int8(&t);
            out.push((format!("{n}{INT8_SUFFIX}"), q));
            out.push((format!("{n}{SCALE_SUFFIX}"), scale));
        } else if t.is_floating_point() {
            out.push((n, t.to_kind(Kind::Half)));
        } else {
            out.push((n, t));
        }
    }
    out
}

/// The inverse of [`quantize_int8`]; `None` when `scale` does not hold one value per output channel.
fn dequantize_int8(q: &Tensor, scale: &Tensor) -> Option<Tensor> {
    let size = q.size();
    if size.is_empty() || scale.size() != [size[0]] || q.kind() != Kind::Int8 {
        return None;
    }
    let mut per_channel = vec![1; size.len()];
    per_channel[0] = size[0];
    Some(q.to_kind(Kind::Float) * scale.to_kind(Kind::Float).view(per_channel.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_weights_round_trip_within_half_a_step() {
        tch::manual_seed(0);
        let t = Tensor::randn([8, 3, 3, 3], (Kind::Float, Device::Cpu)) * 0.1;
        let _ = t.get(2).fill_(0.0); // an all-zero channel stays zero, not NaN
        let (q, scale) = quantize_int8(&t);
        assert_eq!(q.kind(), Kind::Int8);
        let back = dequantize_int8(&q, &scale).unwrap();
        let err = (&back - &t).abs().amax([1, 2, 3], false);
        assert!(f64::try_from((&err - &scale * 0.5001).max()).unwrap() <= 0.0);
        assert_eq!(f64::try_from(back.get(2).abs().max()).unwrap(), 0.0);
        assert!(
            dequantize_int8(&q, &scale.narrow(0, 0, 7)).is_none(),
            "wrong scale count"
        );
    }

    /// What the int8 copy of the weights (the GPU machine's upload) changes: LPIPS-VGG distances
    /// between a real photo crop and degraded copies, f32 weights against int8 (and f16) ones.
    #[test]
    fn int8_lpips_distances_stay_within_half_a_percent_or_1e_4() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
        let vgg = dir.join("lpips").join(Net::Vgg.file_name());
        let photo = dir.join("kodak/kodim23.png");
        // ../shared is part of the test setup (CI has it): missing data fails, never skips.
        assert!(
            vgg.is_file() && photo.is_file(),
            "{} and {} are needed",
            vgg.display(),
            photo.display()
        );
        let tmp =
            std::env::temp_dir().join(format!("hvq-lpips-int8-{}.safetensors", std::process::id()));
        // The file `hvq-train half --int8` writes for the GPU machine.
        let tensors = compact_tensors(Tensor::read_safetensors(&vgg).unwrap(), true);
        Tensor::write_safetensors(&tensors, &tmp).unwrap();
        let exact = Lpips::load(&vgg, Net::Vgg, Device::Cpu).unwrap();
        let int8 = Lpips::load(&tmp, Net::Vgg, Device::Cpu);
        std::fs::remove_file(&tmp).ok();
        let int8 = int8.unwrap();
        tch::manual_seed(0);
        let img = image::open(&photo).unwrap().to_rgb8();
        let crop = image::imageops::crop_imm(&img, 200, 100, 128, 128).to_image();
        let a = Tensor::from_slice(crop.as_raw())
            .view([128, 128, 3])
            .permute([2, 0, 1])
            .unsqueeze(0)
            .to_kind(Kind::Float)
            / 255.0;
        // Degradations of the kind the codec makes: blur, noise, a colour shift.
        let blur = a
            .avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>)
            .upsample_nearest2d([128, 128], None, None);
        let noise = (&a + Tensor::randn_like(&a) * 0.05).clamp(0.0, 1.0);
        let shift = (&a * 0.9 + 0.05).clamp(0.0, 1.0);
        for (what, b) in [("blur", blur), ("noise", noise), ("shift", shift)] {
            let d = f64::try_from(exact.forward(&a, &b)).unwrap();
            let d8 = f64::try_from(int8.forward(&a, &b)).unwrap();
            eprintln!("LPIPS-VGG {what}: f32 weights {d:.5}, int8 {d8:.5}");
            // Measured: 0.2 % for blur and noise (d ≈ 0.3–0.45), 8e-5 absolute for the shift (d ≈ 0.007).
            assert!(
                (d8 - d).abs() <= 0.005 * d + 1e-4,
                "{what}: {d8} against {d}"
            );
        }
    }

    /// The training path (target features once, levels in one batch) gives the distances of
    /// [`Lpips::forward`], and its gradient reaches the compared images only.
    #[test]
    fn distances_to_a_target_match_pairwise_forward() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lpips");
        let lpips = Lpips::load(&dir.join(Net::Vgg.file_name()), Net::Vgg, Device::Cpu).unwrap();
        tch::manual_seed(1);
        let b = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let a = Tensor::rand([6, 3, 32, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let target = lpips.target(&b);
        let d = lpips.distance_to(&a, &target);
        assert_eq!(d.size(), [6]);
        for level in 0..3 {
            let pair = lpips.forward(&a.narrow(0, 2 * level, 2).detach(), &b);
            let got = d.narrow(0, 2 * level, 2).detach();
            let err = f64::try_from((&got - &pair).abs().max()).unwrap();
            let scale = f64::try_from(pair.abs().max()).unwrap();
            assert!(err <= 1e-5 * scale.max(1.0), "level {level}: {err}");
        }
        d.sum(Kind::Float).backward();
        assert!(a.grad().defined());
        assert!(target.taps.iter().all(|t| !t.requires_grad()));
    }

    #[test]
    fn loaded_weights_are_frozen() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lpips");
        let lpips = Lpips::load(&dir.join(Net::Alex.file_name()), Net::Alex, Device::Cpu).unwrap();
        let tensors = lpips.stages.iter().flat_map(|s| {
            s.convs
                .iter()
                .flat_map(|c| [&c.weight, &c.bias])
                .chain([&s.lin])
        });
        assert!(tensors.into_iter().all(|t| !t.requires_grad()));
    }
}
