//! LPIPS against the published reference values, and its error cases.
//!
//! The reference tests need `shared/data/lpips` beside the repository; where it is absent they
//! print `SKIPPED` to stderr and return, so a fresh checkout still passes.

use std::path::PathBuf;

use hvq_train::TrainError;
use hvq_train::data::load_image_f32;
use hvq_train::lpips::{Lpips, Net};
use tch::{Device, Kind, Tensor};

fn lpips_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lpips");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: ../shared absent ({} not found); LPIPS reference test not run",
            dir.display()
        );
        None
    }
}

fn image(dir: &std::path::Path, name: &str) -> Tensor {
    load_image_f32(&dir.join(name)).unwrap().unsqueeze(0)
}

#[test]
fn alexnet_reproduces_published_reference_values() {
    let Some(dir) = lpips_dir() else { return };
    let lpips = Lpips::load(&dir.join("alexnet.safetensors"), Net::Alex, Device::Cpu).unwrap();
    let r = image(&dir, "ex_ref.png");
    let a = Tensor::cat(&[&r, &r], 0);
    let b = Tensor::cat(&[image(&dir, "ex_p0.png"), image(&dir, "ex_p1.png")], 0);
    let d = Vec::<f32>::try_from(lpips.f_forward(&a, &b).unwrap()).unwrap();
    eprintln!("LPIPS-Alex(ref, p0) = {:.5}, (ref, p1) = {:.5}", d[0], d[1]);
    // The published values are given to 3 decimals: agreement within half a unit of the last.
    assert!((d[0] - 0.722).abs() < 5e-4, "p0: {}", d[0]);
    assert!((d[1] - 0.138).abs() < 5e-4, "p1: {}", d[1]);
}

#[test]
fn vgg_is_zero_for_identical_images_positive_otherwise_and_differentiable() {
    let Some(dir) = lpips_dir() else { return };
    let lpips = Lpips::load(&dir.join("vgg16.safetensors"), Net::Vgg, Device::Cpu).unwrap();
    let r = image(&dir, "ex_ref.png");
    let p0 = image(&dir, "ex_p0.png").set_requires_grad(true);
    let same = lpips.forward(&r, &r).double_value(&[0]);
    assert!(same.abs() < 1e-6, "identical images: {same}");
    let d = lpips.forward(&r, &p0);
    assert_eq!(d.size(), [1]);
    let value = d.double_value(&[0]);
    assert!(value > 0.05, "different images: {value}");
    d.sum(Kind::Float).backward();
    let grad = p0.grad();
    assert!(grad.defined() && grad.isfinite().all().int64_value(&[]) == 1);
    assert!(
        grad.abs().sum(Kind::Float).double_value(&[]) > 0.0,
        "gradient reaches the input"
    );
}

#[test]
fn missing_weight_file_is_a_clear_error_naming_it() {
    let path = PathBuf::from("/definitely/not/here/vgg16.safetensors");
    let err = Lpips::load(&path, Net::Vgg, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, TrainError::MissingLpips { path: p } if *p == path),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("/definitely/not/here/vgg16.safetensors")
    );
}

#[test]
fn wrong_tensor_shape_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alexnet.safetensors");
    let w = Tensor::zeros([64, 3, 5, 5], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("features.Conv_0.weight", &w)], &path).unwrap();
    let err = Lpips::load(&path, Net::Alex, Device::Cpu).unwrap_err();
    match err {
        TrainError::LpipsTensor {
            tensor,
            expected,
            got,
            ..
        } => {
            assert_eq!(tensor, "features.Conv_0.weight");
            assert_eq!(expected, [64, 3, 11, 11]);
            assert_eq!(got, Some(vec![64, 3, 5, 5]));
        }
        other => panic!("unexpected error {other}"),
    }
}
