//! The data pipeline: folder errors, the fixed validation split, deterministic batches,
//! skipping of corrupt files, per-rank slices of every batch, and packed shards that give the
//! folder's batches. Images are generated into temporary folders.

use std::path::{Path, PathBuf};

use hvq_train::TrainError;
use hvq_train::data::{
    DataConfig, Dataset, ImageRef, Loader, LoaderOptions, LoaderSlice, load_image_f32,
};
use hvq_train::shards::{self, INDEX_FILE, PackOptions};

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
    // A run resumed at step 3 with another worker count sees the same batches 3, 4, 5, also
    // when the step is not a multiple of the worker count.
    let resumed = batches(files.clone(), 11, 3, 3, 3);
    assert_eq!(&full[3..], &resumed[..]);
    let resumed = batches(files.clone(), 11, 1, 2, 5);
    assert_eq!(&full[1..], &resumed[..]);
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
    let mut union: Vec<PathBuf> = a
        .train()
        .iter()
        .chain(a.val())
        .map(|i| i.path().to_path_buf())
        .collect();
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

/// The raw u8 bytes of `count` batches from `start`, as `slice` of a global batch of `batch`.
fn slice_bytes(
    images: &[ImageRef],
    batch: usize,
    start: u64,
    count: usize,
    slice: LoaderSlice,
    workers: usize,
) -> Vec<Vec<u8>> {
    let opts = LoaderOptions {
        start_step: start,
        workers,
        prefetch: 2,
        slice,
        ..LoaderOptions::new(batch, 16, 11)
    };
    let loader = Loader::start(images.to_vec(), &opts).unwrap();
    assert_eq!(loader.images_per_batch(), batch / slice.world);
    loader
        .take(count)
        .enumerate()
        .map(|(k, b)| {
            let b = b.unwrap();
            assert_eq!(b.step, start + k as u64);
            assert_eq!(b.images.size(), [(batch / slice.world) as i64, 3, 16, 16]);
            Vec::<u8>::try_from(b.images.flatten(0, -1)).unwrap()
        })
        .collect()
}

/// Seven images and a broken one, as file references in sorted order.
fn images_with_a_broken_one(dir: &Path) -> Vec<ImageRef> {
    let mut files = write_images(dir, 7);
    let bad = dir.join("broken.png");
    std::fs::write(&bad, b"\x89PNG but not really").unwrap();
    files.push(bad);
    files.sort();
    files.into_iter().map(ImageRef::File).collect()
}

#[test]
fn rank_slices_in_rank_order_are_the_whole_batch_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let images = images_with_a_broken_one(dir.path());
    const B: usize = 6;
    // Steps 0..5 cross epochs (8 images, 6 a batch) and meet the broken file on the way.
    for start in [0u64, 2, 5] {
        let whole = slice_bytes(&images, B, start, 4, LoaderSlice::WHOLE, 2);
        for world in [1, 2, 3] {
            let slices: Vec<Vec<Vec<u8>>> = (0..world)
                .map(|rank| {
                    slice_bytes(&images, B, start, 4, LoaderSlice { rank, world }, rank + 1)
                })
                .collect();
            for (k, batch) in whole.iter().enumerate() {
                let joined: Vec<u8> = slices.iter().flat_map(|s| s[k].clone()).collect();
                assert!(
                    joined == *batch,
                    "start {start}, world {world}: batch {} differs",
                    start + k as u64
                );
            }
        }
    }
}

#[test]
fn a_batch_that_does_not_split_evenly_over_the_ranks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<ImageRef> = write_images(dir.path(), 3)
        .into_iter()
        .map(ImageRef::File)
        .collect();
    let start = |batch, rank, world| {
        let opts = LoaderOptions {
            slice: LoaderSlice { rank, world },
            ..LoaderOptions::new(batch, 16, 0)
        };
        Loader::start(images.clone(), &opts).map(|_| ())
    };
    match start(4, 0, 3) {
        Err(TrainError::BadConfig { field, reason }) => {
            assert_eq!(field, "schedule.batch");
            assert!(reason.contains("divisible by the 3"), "{reason}");
        }
        other => panic!("a batch of 4 over 3 ranks: {other:?}"),
    }
    assert!(matches!(start(4, 2, 2), Err(TrainError::BadConfig { .. })));
    assert!(matches!(start(4, 0, 0), Err(TrainError::BadConfig { .. })));
    assert!(start(6, 2, 3).is_ok());
}

/// Data config whose manifests go into `cache` (never the user's cache folder).
fn cached_cfg(cache: &Path, val_count: usize) -> DataConfig {
    DataConfig {
        manifest_dir: Some(cache.to_path_buf()),
        ..small_cfg(val_count)
    }
}

/// Relative paths of a dataset's training and validation images.
fn split_of(ds: &Dataset) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let rel = |v: &[ImageRef]| {
        v.iter()
            .map(|i| i.path().strip_prefix(ds.root()).unwrap().to_path_buf())
            .collect()
    };
    (rel(ds.train()), rel(ds.val()))
}

/// A folder of 11 images (sub-folders, a broken one) and its shards, 3 images per shard.
struct Packed {
    _tmp: tempfile::TempDir,
    folder: PathBuf,
    shards: PathBuf,
    cache: PathBuf,
}

fn packed() -> Packed {
    let tmp = tempfile::tempdir().unwrap();
    let (folder, shards, cache) = (
        tmp.path().join("photos"),
        tmp.path().join("shards"),
        tmp.path().join("cache"),
    );
    write_images(&folder, 10);
    std::fs::write(folder.join("sub/broken.jpg"), b"\xff\xd8 not a JPEG").unwrap();
    let opts = PackOptions {
        images_per_shard: 3,
        ..PackOptions::default()
    };
    let summary = shards::pack(&folder, &shards, &opts).unwrap();
    assert_eq!((summary.images, summary.shards), (11, 4));
    Packed {
        _tmp: tmp,
        folder,
        shards,
        cache,
    }
}

#[test]
fn shards_give_the_folders_split_and_batches_byte_for_byte() {
    let p = packed();
    let cfg = cached_cfg(&p.cache, 3);
    let folder = Dataset::open(&p.folder, &cfg).unwrap();
    let packed = Dataset::open(&p.shards, &cfg).unwrap();
    assert!(packed.is_packed() && !folder.is_packed());
    assert_eq!(split_of(&packed), split_of(&folder));
    assert_eq!(packed.train().len(), 8);
    for start in [0u64, 3] {
        for slice in [LoaderSlice::WHOLE, LoaderSlice { rank: 1, world: 2 }] {
            let a = slice_bytes(folder.train(), 4, start, 4, slice, 2);
            let b = slice_bytes(packed.train(), 4, start, 4, slice, 1);
            assert!(
                a == b,
                "start {start}, {slice:?}: shards differ from the folder"
            );
        }
    }
    // The broken file is packed as it is and skipped the same way.
    let broken = packed
        .train()
        .iter()
        .chain(packed.val())
        .find(|i| i.path().ends_with("sub/broken.jpg"))
        .unwrap();
    assert!(matches!(
        broken.decode_rgb8(),
        Err(TrainError::ImageDecode { .. })
    ));
    // Validation crops and whole images read from shards are the folder's.
    let (fv, pv) = (&folder.val()[0], &packed.val()[0]);
    assert!(
        fv.load_center_crop(16)
            .unwrap()
            .equal(&pv.load_center_crop(16).unwrap())
    );
    assert!(fv.load_f32().unwrap().equal(&pv.load_f32().unwrap()));
    assert_eq!(shards::verify(&p.shards).unwrap().members, 11);
}

#[test]
fn shards_are_ustar_files_in_webdataset_order_and_packing_is_reproducible() {
    let p = packed();
    let first = std::fs::read(p.shards.join("shard-000000.tar")).unwrap();
    // Walk the archive by its headers alone, as any tar reader would.
    let mut names = Vec::new();
    let mut at = 0;
    while first[at..at + 512].iter().any(|&b| b != 0) {
        let h = &first[at..at + 512];
        assert_eq!(&h[257..263], b"ustar\0");
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| u32::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            String::from_utf8(f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec())
                .unwrap()
        };
        assert_eq!(u32::from_str_radix(field(148..154).trim(), 8).unwrap(), sum);
        let size = u64::from_str_radix(&field(124..135), 8).unwrap();
        let name = field(0..100);
        let original = std::fs::read(p.folder.join(&name)).unwrap();
        assert_eq!(&first[at + 512..at + 512 + size as usize], &original[..]);
        names.push(name);
        at += 512 + size.div_ceil(512) as usize * 512;
    }
    assert_eq!(first.len(), at + 1024, "two zero blocks end the archive");
    assert_eq!(names, ["img00.png", "img02.jpg", "img03.png"]);
    // Packing again gives the same bytes.
    let again = p.folder.parent().unwrap().join("again");
    shards::pack(
        &p.folder,
        &again,
        &PackOptions {
            images_per_shard: 3,
            ..Default::default()
        },
    )
    .unwrap();
    for name in ["shard-000000.tar", "shard-000003.tar", INDEX_FILE] {
        assert_eq!(
            std::fs::read(p.shards.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name}"
        );
    }
    // Nothing temporary is left behind.
    let mut left: Vec<String> = std::fs::read_dir(&again)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left.len(), 5, "{left:?}");
    assert!(left.iter().all(|n| !n.ends_with(".tmp")));
}

/// Rewrites the index of `p` through `edit` on its JSON text.
fn edit_index(p: &Packed, edit: impl Fn(&str) -> String) {
    let path = p.shards.join(INDEX_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
}

fn open_err(p: &Packed) -> TrainError {
    Dataset::open(&p.shards, &cached_cfg(&p.cache, 3)).unwrap_err()
}

#[test]
fn damaged_indexes_are_typed_errors() {
    type Edit = fn(&str) -> String;
    let cases: [(&str, Edit); 9] = [
        ("not JSON", |_| "{ nope".into()),
        ("another format", |t| t.replace("\"hvq-shards\"", "\"tar\"")),
        ("unknown field", |t| t.replacen("{", "{\"extra\":1,", 1)),
        ("member past the end", |t| {
            t.replacen(",512,", ",99999744,", 1)
        }),
        ("unaligned offset", |t| t.replacen(",512,", ",513,", 1)),
        ("name leaving the folder", |t| {
            t.replace("\"img00.png\"", "\"../img00.png\"")
        }),
        ("absolute name", |t| {
            t.replace("\"img00.png\"", "\"/etc/passwd\"")
        }),
        ("shard outside", |t| {
            t.replace("\"shard-000000.tar\"", "\"../shard-000000.tar\"")
        }),
        ("name twice", |t| {
            t.replace("\"img02.jpg\"", "\"img00.png\"")
        }),
    ];
    for (what, edit) in cases {
        let p = packed();
        edit_index(&p, edit);
        match open_err(&p) {
            TrainError::ShardIndex { path, reason } => {
                assert!(path.ends_with(INDEX_FILE), "{what}: {path:?}");
                eprintln!("{what}: {reason}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // A huge size is refused before anything is allocated.
    let p = packed();
    edit_index(&p, |t| {
        let at = t.find(",512,").unwrap() + 5;
        let end = at + t[at..].find(',').unwrap();
        format!("{}{}{}", &t[..at], u64::MAX / 2, &t[end..])
    });
    assert!(
        matches!(open_err(&p), TrainError::ShardIndex { reason, .. } if reason.contains("limit"))
    );
    // An index over the cap is not read at all (a sparse file: no disk used).
    let p = packed();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p.shards.join(INDEX_FILE))
        .unwrap();
    f.set_len(shards::MAX_INDEX_BYTES + 1).unwrap();
    assert!(matches!(open_err(&p), TrainError::TooLarge { .. }));
}

#[test]
fn damaged_shards_are_typed_errors_and_damaged_members_are_skipped() {
    // A truncated shard is found when the folder is opened.
    let p = packed();
    let shard = p.shards.join("shard-000001.tar");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len - 700)
        .unwrap();
    match open_err(&p) {
        TrainError::ShardDamaged { what, shard: s, .. } => {
            assert_eq!((what, s), ("length", shard.clone()));
        }
        other => panic!("truncated: {other:?}"),
    }
    std::fs::remove_file(&shard).unwrap();
    assert!(
        matches!(open_err(&p), TrainError::Io { .. }),
        "missing shard"
    );

    // A flipped byte inside a member: the folder opens, the member's read names the damage,
    // verify finds it, and the loader skips the member like an unreadable file.
    let p = packed();
    let ds = Dataset::open(&p.shards, &cached_cfg(&p.cache, 0)).unwrap();
    let victim = ds
        .train()
        .iter()
        .find(|i| i.path().ends_with("img03.png"))
        .unwrap()
        .clone();
    let ImageRef::Packed(member) = &victim else {
        panic!("not packed")
    };
    let (offset, _) = member.range();
    let mut bytes = std::fs::read(member.shard()).unwrap();
    bytes[offset as usize + 40] ^= 0x55;
    std::fs::write(member.shard(), &bytes).unwrap();
    match victim.decode_rgb8() {
        Err(TrainError::ShardDamaged {
            what, offset: o, ..
        }) => {
            assert_eq!((what, o), ("member CRC-32", Some(offset)));
        }
        other => panic!("flipped byte: {other:?}"),
    }
    assert!(matches!(
        shards::verify(&p.shards),
        Err(TrainError::ShardDamaged {
            what: "SHA-256",
            ..
        })
    ));
    let mut loader = Loader::start(ds.train().to_vec(), &LoaderOptions::new(11, 16, 3)).unwrap();
    loader.next().unwrap().unwrap();
    assert_eq!(
        loader.skipped(),
        2,
        "the damaged member and the broken JPEG"
    );
}

#[test]
fn packing_refuses_its_own_folder_and_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path(), 2);
    assert!(matches!(
        shards::pack(dir.path(), dir.path(), &PackOptions::default()),
        Err(TrainError::Unpackable { .. })
    ));
    assert!(matches!(
        shards::pack(
            &dir.path().join("none"),
            &dir.path().join("out"),
            &PackOptions::default()
        ),
        Err(TrainError::DataDirMissing { .. })
    ));
    assert!(!dir.path().join(INDEX_FILE).exists());
}
