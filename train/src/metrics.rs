//! Image quality metrics for evaluation: L1, PSNR and MS-SSIM on images in [0, 1].
//!
//! Every function takes one image `[C, H, W]` or a batch `[B, C, H, W]` for both arguments
//! (same shape), computes in f64 on the tensors' device, and returns the mean over the images
//! of the per-image value (the `*_per_image` variants return each one).
//!
//! ```no_run
//! # fn main() -> Result<(), hvq_train::TrainError> {
//! let a = tch::Tensor::rand([3, 256, 256], (tch::Kind::Float, tch::Device::Cpu));
//! let b = (&a + 0.01).clamp(0.0, 1.0);
//! println!("PSNR {:.2} dB, MS-SSIM {:.4}", hvq_train::metrics::psnr(&a, &b)?, hvq_train::metrics::ms_ssim(&a, &b)?);
//! # Ok(()) }
//! ```

use tch::{Kind, Tensor};

use crate::TrainError;

/// MS-SSIM scale weights (Wang, Simoncelli & Bovik 2003), finest scale first.
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
/// Side of the Gaussian window of SSIM.
const WINDOW: i64 = 11;
/// Standard deviation of the Gaussian window of SSIM.
const SIGMA: f64 = 1.5;
/// SSIM stabilisers `(K1·L)²` and `(K2·L)²` for data range L = 1.
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

/// Mean absolute difference over all elements (in [0, 1] pixel units).
///
/// Errors: [`TrainError::ShapeMismatch`] unless both are `[C, H, W]` or `[B, C, H, W]` of one shape.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<f64, TrainError> {
    let (a, b) = as_batches(a, b, "L1")?;
    Ok((a - b).abs().mean(Kind::Double).double_value(&[]))
}

/// Mean over the images of the per-image PSNR in dB (peak 1); `f64::INFINITY` for identical images.
///
/// Errors: as [`l1`].
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<f64, TrainError> {
    Ok(mean(&psnr_per_image(a, b)?))
}

/// PSNR in dB of each image of the batch: `10·log10(1 / MSE)`.
///
/// Errors: as [`l1`].
pub fn psnr_per_image(a: &Tensor, b: &Tensor) -> Result<Vec<f64>, TrainError> {
    let (a, b) = as_batches(a, b, "PSNR")?;
    let mse = (a - b)
        .square()
        .mean_dim(&[1i64, 2, 3][..], false, Kind::Double);
    let mse = Vec::<f64>::try_from(&mse)?;
    Ok(mse
        .into_iter()
        .map(|m| {
            if m > 0.0 {
                -10.0 * m.log10()
            } else {
                f64::INFINITY
            }
        })
        .collect())
}

/// Mean over the images of the per-image MS-SSIM (see [`ms_ssim_per_image`]).
///
/// Errors: as [`ms_ssim_per_image`].
pub fn ms_ssim(a: &Tensor, b: &Tensor) -> Result<f64, TrainError> {
    Ok(mean(&ms_ssim_per_image(a, b)?))
}

/// The 5-scale MS-SSIM of each image, computed per channel and averaged over the channels.
///
/// The standard definition with the usual conventions of `pytorch_msssim`: an 11×11 Gaussian
/// window (σ = 1.5) applied without padding, K1 = 0.01, K2 = 0.03, data range 1, 2×2 average
/// pooling between scales (padding odd sides by one), contrast-structure terms of scales 1–4
/// and the full SSIM of scale 5 raised to [`MS_SSIM_WEIGHTS`] (negative terms clamped to 0).
///
/// Errors: [`TrainError::ShapeMismatch`] as for [`l1`]; [`TrainError::ImageTooSmall`] when a side
/// is under [`ms_ssim_min_size`] (161) pixels, where the coarsest scale would be smaller than
/// the window. Fewer scales are never used silently, since the values would not be comparable.
pub fn ms_ssim_per_image(a: &Tensor, b: &Tensor) -> Result<Vec<f64>, TrainError> {
    let (mut x, mut y) = as_batches(a, b, "MS-SSIM")?;
    let (h, w) = (x.size()[2], x.size()[3]);
    let min = ms_ssim_min_size();
    if h < min || w < min {
        return Err(TrainError::ImageTooSmall {
            what: "MS-SSIM",
            min,
            height: h,
            width: w,
        });
    }
    let channels = x.size()[1];
    let window = gaussian_window(channels, x.device());
    let mut value: Option<Tensor> = None;
    for (scale, &weight) in MS_SSIM_WEIGHTS.iter().enumerate() {
        let (ssim, cs) = ssim_and_cs(&x, &y, &window);
        let last = scale + 1 == MS_SSIM_WEIGHTS.len();
        let term = if last { ssim } else { cs }
            .relu()
            .pow_tensor_scalar(weight);
        value = Some(match value {
            Some(v) => v * term,
            None => term,
        });
        if !last {
            x = halve(&x);
            y = halve(&y);
        }
    }
    let per_image = value.map_or_else(
        || Tensor::zeros([0], (Kind::Double, x.device())),
        |v| v.mean_dim(&[1i64][..], false, Kind::Double),
    );
    Ok(Vec::<f64>::try_from(&per_image)?)
}

/// The smallest image side MS-SSIM accepts: four halvings (rounding up) must leave a full
/// 11-pixel window, which needs more than 10·16 pixels.
pub fn ms_ssim_min_size() -> i64 {
    (WINDOW - 1) * 16 + 1
}

/// Per-image, per-channel mean SSIM and mean contrast-structure term `[B, C]` at one scale.
fn ssim_and_cs(x: &Tensor, y: &Tensor, window: &(Tensor, Tensor)) -> (Tensor, Tensor) {
    let blur = |t: &Tensor| gaussian_blur(t, window);
    let (mu_x, mu_y) = (blur(x), blur(y));
    let var_x = blur(&x.square()) - mu_x.square();
    let var_y = blur(&y.square()) - mu_y.square();
    let cov = blur(&(x * y)) - &mu_x * &mu_y;
    let cs_map = (cov * 2.0 + C2) / (var_x + var_y + C2);
    let luminance = (&mu_x * &mu_y * 2.0 + C1) / (mu_x.square() + mu_y.square() + C1);
    let ssim_map = luminance * &cs_map;
    (
        ssim_map.mean_dim(&[2i64, 3][..], false, Kind::Double),
        cs_map.mean_dim(&[2i64, 3][..], false, Kind::Double),
    )
}

/// Separable Gaussian filter, one channel at a time, without padding ("valid").
fn gaussian_blur(t: &Tensor, (horizontal, vertical): &(Tensor, Tensor)) -> Tensor {
    let groups = t.size()[1];
    t.conv2d::<Tensor>(horizontal, None, [1, 1], [0, 0], [1, 1], groups)
        .conv2d::<Tensor>(vertical, None, [1, 1], [0, 0], [1, 1], groups)
}

/// The normalized 1-D Gaussian as depthwise kernels `[C, 1, 1, 11]` and `[C, 1, 11, 1]`.
fn gaussian_window(channels: i64, device: tch::Device) -> (Tensor, Tensor) {
    let centre = (WINDOW / 2) as f64;
    let g: Vec<f64> = (0..WINDOW)
        .map(|i| (-((i as f64 - centre).powi(2)) / (2.0 * SIGMA * SIGMA)).exp())
        .collect();
    let sum: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / sum).collect();
    let g = Tensor::from_slice(&g).to_device(device);
    let horizontal = g.view([1, 1, 1, WINDOW]).repeat([channels, 1, 1, 1]);
    let vertical = g.view([1, 1, WINDOW, 1]).repeat([channels, 1, 1, 1]);
    (horizontal, vertical)
}

/// 2×2 average pooling; an odd side is padded by one (zeros, counted in the average).
fn halve(t: &Tensor) -> Tensor {
    let (h, w) = (t.size()[2], t.size()[3]);
    t.avg_pool2d([2, 2], [2, 2], [h % 2, w % 2], false, true, None::<i64>)
}

/// Checks the shapes and returns both as f64 batches `[B, C, H, W]`.
fn as_batches(a: &Tensor, b: &Tensor, what: &'static str) -> Result<(Tensor, Tensor), TrainError> {
    let (sa, sb) = (a.size(), b.size());
    let ok = sa == sb && matches!(sa.len(), 3 | 4) && sa.iter().all(|&d| d > 0);
    if !ok {
        return Err(TrainError::ShapeMismatch { what, a: sa, b: sb });
    }
    let batch = |t: &Tensor| {
        let t = t.to_kind(Kind::Double);
        if sa.len() == 3 { t.unsqueeze(0) } else { t }
    };
    Ok((batch(a), batch(b).to_device(a.device())))
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(value: f64, side: i64) -> Tensor {
        Tensor::full([3, side, side], value, (Kind::Float, tch::Device::Cpu))
    }

    /// 0.5 ± `delta` in a checkerboard: MSE is exactly `delta²` (no clamping needed).
    fn checkerboard(delta: f64, side: i64) -> Tensor {
        let r = Tensor::arange(side, (Kind::Int64, tch::Device::Cpu));
        let parity = (r.view([side, 1]) + r.view([1, side]))
            .remainder(2)
            .to_kind(Kind::Double);
        (parity * (2.0 * delta) - delta + 0.5).expand([3, side, side], false)
    }

    #[test]
    fn identical_images_give_infinite_psnr_zero_l1_and_unit_ms_ssim() {
        let a = Tensor::rand([2, 3, 176, 180], (Kind::Float, tch::Device::Cpu));
        assert_eq!(psnr(&a, &a).unwrap(), f64::INFINITY);
        assert_eq!(l1(&a, &a).unwrap(), 0.0);
        // f64 arithmetic on identical inputs: only rounding separates it from 1.
        assert!((ms_ssim(&a, &a).unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn known_noise_gives_expected_psnr_and_l1() {
        let a = constant(0.5, 64);
        for (delta, expected_db) in [(0.1, 20.0), (0.01, 40.0), (0.05, 26.0206)] {
            let b = checkerboard(delta, 64);
            // f32 storage of 0.5 ± delta limits the agreement to about 1e-6 relative.
            assert!(
                (psnr(&a, &b).unwrap() - expected_db).abs() < 1e-3,
                "delta {delta}"
            );
            assert!((l1(&a, &b).unwrap() - delta).abs() < 1e-6);
        }
    }

    #[test]
    fn ms_ssim_of_constant_images_is_luminance_to_the_last_weight() {
        // No variance anywhere: every contrast-structure term is exactly 1, and the coarsest
        // scale's luminance term is (2·μa·μb + C1) / (μa² + μb² + C1).
        let (ma, mb) = (0.5, 0.6);
        let lum: f64 = (2.0 * ma * mb + C1) / (ma * ma + mb * mb + C1);
        let expected = lum.powf(MS_SSIM_WEIGHTS[4]);
        let got = ms_ssim(&constant(ma, 176), &constant(mb, 176)).unwrap();
        // Values stored in f32, variances ~1e-16 from rounding: 1e-6 is ample.
        assert!(
            (got - expected).abs() < 1e-6,
            "got {got}, expected {expected}"
        );
    }

    #[test]
    fn ms_ssim_decreases_as_noise_grows() {
        tch::manual_seed(3);
        let a = Tensor::rand([3, 192, 192], (Kind::Float, tch::Device::Cpu));
        let noise = Tensor::randn([3, 192, 192], (Kind::Float, tch::Device::Cpu));
        let scores: Vec<f64> = [0.01, 0.05, 0.2]
            .iter()
            .map(|s| ms_ssim(&a, &(&a + &noise * *s).clamp(0.0, 1.0)).unwrap())
            .collect();
        assert!(
            scores[0] > scores[1] && scores[1] > scores[2] && scores[2] > 0.0,
            "{scores:?}"
        );
    }

    #[test]
    fn ms_ssim_rejects_small_images_and_mismatched_shapes() {
        let small = constant(0.5, 160);
        assert!(matches!(
            ms_ssim(&small, &small),
            Err(TrainError::ImageTooSmall { min: 161, .. })
        ));
        assert!(ms_ssim(&constant(0.5, 161), &constant(0.5, 161)).is_ok());
        let err = psnr(&constant(0.5, 8), &constant(0.5, 9)).unwrap_err();
        assert!(matches!(err, TrainError::ShapeMismatch { .. }), "{err}");
    }

    #[test]
    fn batch_values_are_per_image() {
        let a = Tensor::stack(&[constant(0.5, 32), constant(0.5, 32)], 0);
        let b = Tensor::stack(&[checkerboard(0.1, 32), checkerboard(0.01, 32)], 0);
        let v = psnr_per_image(&a, &b).unwrap();
        assert!(
            (v[0] - 20.0).abs() < 1e-3 && (v[1] - 40.0).abs() < 1e-3,
            "{v:?}"
        );
        assert!((psnr(&a, &b).unwrap() - 30.0).abs() < 1e-3);
    }
}
