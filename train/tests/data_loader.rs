//! The data pipeline: folder errors, the fixed validation split, deterministic batches and
//! skipping of corrupt files. Images are generated into temporary folders.

use std::path::{Path, PathBuf};

use hvq_train::TrainError;
use hvq_train::data::{DataConfig, Dataset, Loader, load_image_f32};

/// Writes `n` small RGB images with distinct content (some in a sub-folder, some with upper-case
/// extensions) and returns their paths.
fn write_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    (0..n)
        .map(|i| {
            let (w, h) = (24 + 3 * i as u32, 20 + 2 * (i % 4) as u32);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 7 + i as u32 * 13) as u8,
                    (y * 11) as u8,
                    (x * y + i as u32) as u8,
                ])
            });
            let name = match i % 3 {
                0 => format!("img{i:02}.png"),
                1 => format!("sub/img{i:02}.PNG"),
                _ => format!("img{i:02}.jpg"),
            };
            let path = dir.join(name);
            let fmt = if i % 3 == 2 {
                image::ImageFormat::Jpeg
            } else {
                image::ImageFormat::Png
            };
            img.save_with_format(&path, fmt).unwrap();
            path
        })
        .collect()
}

fn small_cfg(val_count: usize) -> DataConfig {
    DataConfig {
        image_size: 16,
        val_count,
        workers: 2,
        prefetch: 2,
        ..DataConfig::default()
    }
}

fn batches(
    files: Vec<PathBuf>,
    seed: u64,
    start: u64,
    workers: usize,
    count: usize,
) -> Vec<(u64, Vec<f32>)> {
    let loader = Loader::new(files, 3, 16, seed, start, workers, 3).unwrap();
    loader
        .take(count)
        .map(|b| {
            let b = b.unwrap();
            assert_eq!(b.images.size(), [3, 3, 16, 16]);
            assert_eq!(b.images.kind(), tch::Kind::Uint8);
            let f = b.images.flatten(0, -1).to_kind(tch::Kind::Float) / 255.0;
            (b.step, Vec::<f32>::try_from(f).unwrap())
        })
        .collect()
}

#[test]
fn batch_content_depends_only_on_seed_and_step() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_images(dir.path(), 7);
    let full = batches(files.clone(), 11, 0, 1, 6);
    // A run resumed at step 3 with another worker count sees the same batches 3, 4, 5.
    let resumed = batches(files.clone(), 11, 3, 3, 3);
    assert_eq!(&full[3..], &resumed[..]);
    assert_eq!(
        full.iter().map(|b| b.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    let other_seed = batches(files, 12, 0, 2, 6);
    assert_ne!(full, other_seed);
    for (_, px) in &full {
        assert!(px.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn corrupt_file_is_skipped_counted_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = write_images(dir.path(), 5);
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"this is not a JPEG at all \x00\x01\x02").unwrap();
    files.push(bad);
    files.sort();
    // Two epochs of 6 files at 3 per batch: the broken file is met twice but counted once.
    let mut loader = Loader::new(files, 3, 16, 5, 0, 2, 2).unwrap();
    for step in 0..4 {
        let b = loader.next().unwrap().unwrap();
        assert_eq!(b.step, step);
    }
    assert_eq!(loader.skipped(), 1);
}

#[test]
fn only_corrupt_files_give_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("a.png");
    std::fs::write(&bad, b"garbage").unwrap();
    let mut loader = Loader::new(vec![bad], 2, 16, 0, 0, 1, 1).unwrap();
    assert!(matches!(
        loader.next(),
        Some(Err(TrainError::NoDecodableImages { count: 1, step: 0 }))
    ));
    assert!(loader.next().is_none());
}

#[test]
fn missing_and_empty_folders_are_distinct_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Dataset::open(&missing, &small_cfg(0)).unwrap_err();
    assert!(
        matches!(&err, TrainError::DataDirMissing { path } if *path == missing),
        "{err}"
    );

    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    let err = Dataset::open(dir.path(), &small_cfg(0)).unwrap_err();
    assert!(matches!(err, TrainError::NoImages { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn too_few_images_for_the_validation_split_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path(), 3);
    let err = Dataset::open(dir.path(), &small_cfg(3)).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::TooFewImages {
                found: 3,
                val_count: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn validation_split_is_fixed_disjoint_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = write_images(dir.path(), 12);
    all.sort();
    let a = Dataset::open(dir.path(), &small_cfg(4)).unwrap();
    let b = Dataset::open(
        dir.path(),
        &DataConfig {
            workers: 1,
            ..small_cfg(4)
        },
    )
    .unwrap();
    assert_eq!((a.train(), a.val()), (b.train(), b.val()));
    assert_eq!(a.val().len(), 4);
    assert!(a.val().iter().all(|v| !a.train().contains(v)));
    let mut union: Vec<PathBuf> = a.train().iter().chain(a.val()).cloned().collect();
    union.sort();
    assert_eq!(
        union, all,
        "every image (sub-folders, upper-case extensions) is found once"
    );

    // Adding a file moves at most one file out of the validation set.
    write_images(&dir.path().join("more"), 1);
    let c = Dataset::open(dir.path(), &small_cfg(4)).unwrap();
    assert!(a.val().iter().filter(|v| c.val().contains(v)).count() >= 3);
}

#[test]
fn load_image_f32_keeps_the_whole_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = &write_images(dir.path(), 1)[0];
    let t = load_image_f32(path).unwrap();
    assert_eq!(t.size(), [3, 20, 24]);
    // Pixel (x=1, y=0) has red 7, green 0, blue 0.
    let px = Vec::<f32>::try_from(t.select(2, 1).select(1, 0)).unwrap();
    assert_eq!(px, [7.0 / 255.0, 0.0, 0.0]);
    let err = load_image_f32(&dir.path().join("absent.png")).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
}
