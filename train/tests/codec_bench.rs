//! `hvq-train codec-bench` (libtorch's side of the wgpu / libtorch codec benchmark): its encode
//! gives the CPU backend's tokens on the same weights and images, its decode the CPU backend's
//! pixels, its records carry the wgpu benchmark's fields, and bad `--sizes` / `--batches` are
//! clap value errors.

use clap::Parser;
use hvq_cpu::CpuModel;
use hvq_spec::flops::ModelFlops;
use hvq_spec::graph::ModelGraph;
use hvq_spec::{FeatureMap, ModelConfig, random_weights};
use hvq_train::TrainError;
use hvq_train::codec_bench::{
    CaseSetup, CodecBenchArgs, LevelTokens, TorchCodec, WEIGHT_SEED, bench_images, parse_batch,
    parse_size, run_case,
};
use hvq_train::model::Compute;
use tch::{Device, Tensor};

/// libtorch's intra-op threads spin-wait; on a shared 2-core machine one thread is faster.
fn single_thread() {
    tch::set_num_threads(1);
}

/// Image `b` of a [`bench_images`] batch as a feature map.
fn image(images: &[f32], b: usize, height: usize, width: usize) -> FeatureMap {
    let n = 3 * height * width;
    FeatureMap {
        channels: 3,
        height,
        width,
        data: images[b * n..(b + 1) * n].to_vec(),
    }
}

/// Squared distance in f64 from position `pos` of `p` to codebook row `code`.
fn distance(p: &FeatureMap, pos: usize, codebook: &[f32], code: usize) -> f64 {
    let d = p.channels;
    (0..d)
        .map(|c| (p.data[c * p.plane() + pos] as f64 - codebook[code * d + c] as f64).powi(2))
        .sum()
}

/// Asserts that `ours` are the tokens of latent `p` up to near-ties (two entries equidistant
/// to ~1e-5 of their distance), as the conformance tests accept; returns how many differ.
fn assert_same_up_to_near_ties(
    what: &str,
    ours: &[u32],
    theirs: &[u32],
    p: &FeatureMap,
    codebook: &[f32],
) -> usize {
    assert_eq!(ours.len(), theirs.len(), "{what}: grid size");
    let mut flips = 0;
    for (pos, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        if a != b {
            flips += 1;
            let (da, db) = (
                distance(p, pos, codebook, a as usize),
                distance(p, pos, codebook, b as usize),
            );
            assert!(
                (da - db).abs() <= 1e-4 * (1.0 + da.max(db)),
                "{what} position {pos}: token {a} (distance {da}) vs {b} (distance {db}) is not a near-tie"
            );
        }
    }
    flips
}

/// The benchmark's batched encode and decode compute what the CPU backend (and libtorch one
/// image at a time, the evaluation's path) compute on the same weights and images.
#[test]
fn batched_encode_and_decode_match_the_cpu_backend() {
    single_thread();
    let cfg = ModelConfig::tiny();
    let weights = random_weights(&cfg, WEIGHT_SEED).unwrap();
    let codec = TorchCodec::new(&weights, Device::Cpu, Compute::default()).unwrap();
    let cpu = CpuModel::new(weights.clone());
    let codebook = cpu.weights().tensor("quantizer.codebook").data.clone();
    let (batch, h, w) = (2, 32, 32);
    let images = bench_images(batch, h, w);
    let levels: Vec<usize> = (0..cfg.levels).collect();
    let tokens = codec.encode(&images, batch, h, w).unwrap();
    assert_eq!(tokens.len(), cfg.levels);
    let (_vs, single) = hvq_train::eval::load_model(&weights, Device::Cpu).unwrap();
    let mut flips = 0;
    for b in 0..batch {
        let img = image(&images, b, h, w);
        let grids = cpu.encode(&img, &levels).unwrap();
        let latents = cpu.encode_latents(&img).unwrap();
        let x = Tensor::from_slice(&img.data).view([1, 3, h as i64, w as i64]);
        let one_by_one = hvq_train::eval::reconstruct(&single, &x);
        for (l, level) in tokens.iter().enumerate() {
            assert_eq!(level.level, l);
            assert_eq!(
                (level.batch, level.height, level.width),
                (batch, grids[l].height, grids[l].width)
            );
            let ours = level.grid(b);
            let what = format!("image {b} level {l}");
            flips += assert_same_up_to_near_ties(
                &format!("{what} vs hvq-cpu"),
                &ours.tokens,
                &grids[l].tokens,
                &latents[l],
                &codebook,
            );
            let alone: Vec<u32> = Vec::<i64>::try_from(one_by_one[l].0.reshape([-1]))
                .unwrap()
                .into_iter()
                .map(|t| t as u32)
                .collect();
            flips += assert_same_up_to_near_ties(
                &format!("{what} vs libtorch batch 1"),
                &ours.tokens,
                &alone,
                &latents[l],
                &codebook,
            );

            // Decoded from the same tokens, the pixels agree to float rounding.
            let pixels = codec.decode(level).unwrap();
            let n = 3 * h * w;
            assert_eq!(pixels.len(), batch * n, "{what}: decoded size");
            let want = cpu.decode(&ours).unwrap();
            let diff = pixels[b * n..(b + 1) * n]
                .iter()
                .zip(&want.data)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff < 1e-4, "{what}: decoded pixels differ by {diff}");
        }
    }
    // On this machine all agree exactly; a flip elsewhere must at least stay a rare near-tie.
    let total: usize = tokens.iter().map(|t| t.tokens.len()).sum();
    eprintln!("{flips} near-tie flips over {total} tokens against each of two references");
    assert!(
        flips * 100 <= total,
        "{flips} near-tie flips of {total} tokens"
    );
}

/// A level's batch of tokens splits into per-image grids: grid `b` is image `b`'s.
#[test]
fn level_tokens_split_into_per_image_grids() {
    let t = LevelTokens {
        level: 1,
        batch: 2,
        height: 1,
        width: 3,
        tokens: vec![0, 1, 2, 3, 4, 5],
    };
    let g = t.grid(1);
    assert_eq!((g.level, g.height, g.width), (1, 1, 3));
    assert_eq!(g.tokens, vec![3, 4, 5]);
}

/// One case gives one encode record and one decode record per level, with the wgpu
/// benchmark's fields and FLOP counts.
#[test]
fn a_case_gives_an_encode_and_a_decode_per_level_record() {
    single_thread();
    let cfg = ModelConfig::tiny();
    let weights = random_weights(&cfg, WEIGHT_SEED).unwrap();
    let codec = TorchCodec::new(&weights, Device::Cpu, Compute::default()).unwrap();
    let setup = CaseSetup {
        backend: "libtorch-cpu".into(),
        precision: "f32".into(),
        runs: 1,
    };
    let records = run_case(&codec, &setup, "tiny", (16, 16), 2).unwrap();
    assert_eq!(records.len(), 1 + cfg.levels);
    let flops = ModelFlops::new(&ModelGraph::new(&cfg), 16, 16);
    for (i, r) in records.iter().enumerate() {
        let (op, level, fwd) = if i == 0 {
            ("encode", None, flops.encoder.forward)
        } else {
            ("decode", Some(i - 1), flops.decoders[i - 1].forward)
        };
        assert_eq!((r.op.as_str(), r.level), (op, level));
        assert_eq!(
            (r.preset.as_str(), r.width, r.height, r.batch, r.runs),
            ("tiny", 16, 16, 2, 1)
        );
        assert_eq!(r.gflop_per_image, fwd as f64 / 1e9);
        assert!(r.median_ms > 0.0 && r.images_per_s > 0.0);
        assert!((r.gflop_per_s - r.gflop_per_image * r.images_per_s).abs() < 1e-9);
    }
    let json = serde_json::to_value(&records[0]).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "backend",
        "preset",
        "width",
        "height",
        "batch",
        "op",
        "level",
        "median_ms",
        "runs",
        "images_per_s",
        "gflop_per_image",
        "gflop_per_s",
    ] {
        assert!(keys.contains(&k), "record lacks `{k}`: {json}");
    }
    assert!(json["level"].is_null());
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: CodecBenchArgs,
}

fn parse(args: &[&str]) -> Result<CodecBenchArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("codec-bench").chain(args.iter().copied())).map(|c| c.args)
}

#[test]
fn sizes_and_batches_parse_or_are_typed_errors() {
    let a = parse(&[
        "--sizes",
        "256x256,768x512",
        "--batches",
        "1,32",
        "--device",
        "cpu",
    ])
    .unwrap();
    assert_eq!(a.sizes, vec![(256, 256), (768, 512)]);
    assert_eq!(a.batches, vec![1, 32]);
    let d = parse(&[]).unwrap();
    assert_eq!(d.presets, vec!["small", "paper"]);
    assert_eq!(d.runs, 5);
    for bad in [
        ["--sizes", "256"],
        ["--sizes", "0x256"],
        ["--sizes", "256x"],
        ["--sizes", "axb"],
        ["--batches", "0"],
        ["--batches", "1,x"],
        ["--batches=-2", "--device=cpu"],
        ["--runs", "0"],
    ] {
        let e = parse(&bad).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{bad:?}: {e}"
        );
    }
    let e = parse(&["--precision", "f16"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{e}");
    assert_eq!(parse_size("768x512").unwrap(), (768, 512));
    assert!(
        matches!(parse_size("768*512"), Err(TrainError::BadConfig { field, .. }) if field == "sizes")
    );
    assert!(
        matches!(parse_batch("0"), Err(TrainError::BadConfig { field, .. }) if field == "batches")
    );
}
