//! `hvq-train`: train, export, evaluate and benchmark the hvq model; write conformance vectors.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hvq_spec::StoreDtype;
use hvq_train::config::TrainConfig;
use hvq_train::device::{DeviceRequest, select_device};
use hvq_train::lpips::{Lpips, Net};
use hvq_train::plot::{PlotOptions, plot_losses};
use hvq_train::train::RunOptions;

#[derive(Parser, Debug)]
#[command(
    name = "hvq-train",
    version,
    about = "Train the hvq hierarchical shared-codebook VQ-VAE (libtorch)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the conformance vectors (weights, generated inputs, libtorch outputs).
    ExportVectors {
        /// Output folder.
        #[arg(long, default_value = "tests/vectors")]
        out: PathBuf,
    },
    /// Export inference weights from a training checkpoint to a safetensors weight file.
    Export {
        /// The checkpoint (or a run folder holding `checkpoint.safetensors`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output weight file.
        #[arg(long)]
        out: PathBuf,
        /// Store as f16 (half the size).
        #[arg(long)]
        f16: bool,
        /// Extra provenance metadata, `hvq.KEY=VALUE` (repeatable), e.g.
        /// `--meta "hvq.machine=2-core EPYC, 4 h"` or `--meta "hvq.command=..."` to record the
        /// training command instead of the export command. Reserved keys are refused.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Train from a TOML run config.
    Train {
        /// The run config.
        #[arg(long)]
        config: PathBuf,
        /// Continue from the run folder's checkpoint.
        #[arg(long)]
        resume: bool,
        /// cpu, cuda or auto (overrides the config's `device`).
        #[arg(long)]
        device: Option<DeviceRequest>,
        /// The learning-rate schedule's horizon in steps (overrides the config's
        /// `schedule.steps`); the run stops there unless --stop-after says otherwise.
        #[arg(long)]
        steps: Option<u64>,
        /// Stop after this many steps in total, with a checkpoint and exported weights,
        /// without changing the learning-rate schedule.
        #[arg(long, value_name = "STEP")]
        stop_after: Option<u64>,
        /// On --resume, accept a horizon (--steps or the config) that differs from the
        /// checkpoint's: the decay restarts from the current step.
        #[arg(long)]
        change_horizon: bool,
    },
    /// Evaluate a weight file on an image folder: per-level L1, PSNR, MS-SSIM, LPIPS-Alex, codebook usage.
    Eval {
        /// The weight file.
        #[arg(long)]
        weights: PathBuf,
        /// The image folder (e.g. ../shared/data/kodak).
        #[arg(long)]
        data: PathBuf,
        /// LPIPS-Alex weight file.
        #[arg(long, default_value = "../shared/data/lpips/alexnet.safetensors")]
        lpips: PathBuf,
        /// LPIPS-VGG16 weight file: also report LPIPS-VGG (the paper's Table 1 has both).
        #[arg(long)]
        lpips_vgg: Option<PathBuf>,
        /// Evaluate S×S centre crops (shorter side resized to S first), as the paper did.
        #[arg(long, value_name = "S")]
        center_crop: Option<u32>,
        /// Evaluate at most N images (the first in path order).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Evaluate only the folder's fixed held-out split (the 50 photos training never sees).
        #[arg(long)]
        held_out: bool,
        /// Where to write `eval.md` and `eval.json` (default: next to the weights).
        #[arg(long)]
        out: Option<PathBuf>,
        /// cpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        device: DeviceRequest,
    },
    /// Plot per-level loss curves of one or more runs (`label=path/log.jsonl` or a path).
    Plot {
        /// Logs to plot.
        #[arg(required = true)]
        logs: Vec<String>,
        /// Output PNG.
        #[arg(long, default_value = "losses.png")]
        out: PathBuf,
        /// Per-level component to plot.
        #[arg(long, default_value = "total")]
        metric: String,
        /// Moving-average window.
        #[arg(long, default_value_t = 1)]
        smooth: usize,
    },
    /// Print the paper's Table 1 (per-level reconstruction) and Table 2 (codebook sharing) for
    /// several evaluations: `label=path/eval.json` each.
    Table {
        /// Evaluations, in table order.
        #[arg(required = true)]
        evals: Vec<String>,
    },
    /// Copy an image folder with every shorter side reduced to at most --short-side pixels
    /// (same relative paths, so the same validation split), e.g. to fit a GPU machine's upload.
    ShrinkData {
        /// Source folder.
        #[arg(long)]
        src: PathBuf,
        /// Destination folder.
        #[arg(long)]
        dst: PathBuf,
        /// Largest shorter side, in pixels.
        #[arg(long, default_value_t = 256)]
        short_side: u32,
        /// JPEG quality of re-encoded JPEG files.
        #[arg(long, default_value_t = 90)]
        quality: u8,
    },
    /// Draw the paper's Figure 5: one row per model (`label=weights.safetensors`), the centre
    /// crop of IMAGE and each level's reconstruction.
    Grid {
        /// Models, in row order.
        #[arg(required = true)]
        models: Vec<String>,
        /// The image.
        #[arg(long)]
        image: PathBuf,
        /// Side of the centre crop.
        #[arg(long, default_value_t = 256)]
        size: u32,
        /// Output PNG.
        #[arg(long, default_value = "grid.png")]
        out: PathBuf,
    },
    /// Rewrite a safetensors file (e.g. the LPIPS weights) with every float tensor in f16:
    /// half the size, for a GPU machine's upload limit; the loaders widen it back to f32.
    Half {
        /// Source safetensors file.
        #[arg(long)]
        src: PathBuf,
        /// Destination file.
        #[arg(long)]
        dst: PathBuf,
        /// Store 4-D weights (convolutions) in int8 with one f32 scale per output channel: a
        /// quarter of f32. Only the LPIPS loader reads this; LPIPS-VGG distances move by under
        /// 0.5 % or 1e-4 (test `int8_lpips_distances_stay_within_half_a_percent_or_1e_4`).
        #[arg(long)]
        int8: bool,
    },
    /// Time the training input pipeline on one core (decode, random resized crop, f32) over the
    /// images of a folder, and print images/s per core with each stage's share; JSON with --json.
    BenchData {
        /// Image folder (e.g. ../shared/data/imagenet-sample) or shard folder (`pack`).
        #[arg(long)]
        data: PathBuf,
        /// Side of the training crop.
        #[arg(long, default_value_t = 256)]
        size: u32,
        /// At most this many images (in the folder's sorted order).
        #[arg(long)]
        limit: Option<usize>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pack an image folder into tar shards (WebDataset layout) with an index; the shard folder
    /// then serves as `data_dir` with the same split and the same batches as the folder.
    Pack {
        /// The image folder.
        #[arg(long)]
        data: PathBuf,
        /// The shard folder to write (`shard-000000.tar`, ..., `hvq-shards.json`).
        #[arg(long)]
        out: PathBuf,
        /// Images per shard.
        #[arg(long, default_value_t = hvq_train::shards::DEFAULT_IMAGES_PER_SHARD)]
        images_per_shard: usize,
    },
    /// Check a shard folder thoroughly: every shard's SHA-256 and every member's tar header.
    VerifyShards {
        /// The shard folder.
        #[arg(long)]
        data: PathBuf,
    },
    /// Time libtorch encode (all levels) and decode (each level) of presets' random weights on
    /// batches of images, as the wgpu benchmark does (same weights, images, lines and JSON
    /// records), for the wgpu / libtorch comparison.
    CodecBench(hvq_train::codec_bench::CodecBenchArgs),
    /// Time training steps and libtorch encode/decode (median of several runs).
    Bench {
        /// Presets whose training step to time.
        #[arg(long, value_delimiter = ',', default_value = "small,paper")]
        presets: Vec<String>,
        /// Batch size of the timed training step.
        #[arg(long, default_value_t = 4)]
        batch: i64,
        /// Side of the timed training step's crops.
        #[arg(long, default_value_t = 256)]
        size: i64,
        /// Timed repetitions (after one warm-up).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Weights whose encode/decode to time (random `small` weights when absent).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// cpu, cuda or auto.
        #[arg(long, default_value = "cpu")]
        device: DeviceRequest,
        /// Compute precision of the timed training step: f32 or bf16.
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
        precision: String,
        /// The card's name for the datasheet peaks (default: from nvidia-smi).
        #[arg(long)]
        card: Option<String>,
        /// Also write everything as one JSON object to this file; bare `--json` prints the
        /// JSON to stdout instead of the tables.
        #[arg(long, value_name = "PATH", num_args = 0..=1)]
        json: Option<Option<PathBuf>>,
    },
}

/// A `label=path` argument, or a bare path labelled by itself.
fn labelled(arg: &str) -> (String, PathBuf) {
    match arg.split_once('=') {
        Some((label, path)) => (label.to_string(), PathBuf::from(path)),
        None => (arg.to_string(), PathBuf::from(arg)),
    }
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ExportVectors { out } => {
            hvq_train::vectors::export_vectors(&out, &command_line())
                .with_context(|| format!("writing vectors to {}", out.display()))?;
            println!("wrote conformance vectors to {}", out.display());
        }
        Command::Export {
            checkpoint,
            out,
            f16,
            meta,
        } => export(&checkpoint, &out, f16, &meta)?,
        Command::Train {
            config,
            resume,
            device,
            steps,
            stop_after,
            change_horizon,
        } => train(&config, resume, device, steps, stop_after, change_horizon)?,
        Command::Eval {
            weights,
            data,
            lpips,
            lpips_vgg,
            center_crop,
            limit,
            held_out,
            out,
            device,
        } => {
            let opts = hvq_train::eval::EvalOptions {
                center_crop,
                limit,
                held_out,
            };
            eval(
                &weights,
                &data,
                &lpips,
                lpips_vgg.as_deref(),
                &opts,
                out,
                device,
            )?
        }
        Command::Plot {
            logs,
            out,
            metric,
            smooth,
        } => plot(&logs, &out, metric, smooth)?,
        Command::ShrinkData {
            src,
            dst,
            short_side,
            quality,
        } => {
            let n = hvq_train::data::shrink_folder(&src, &dst, short_side, quality)?;
            println!("wrote {n} images to {}", dst.display());
        }
        Command::Grid {
            models,
            image,
            size,
            out,
        } => {
            let models: Vec<(String, PathBuf)> = models.iter().map(|m| labelled(m)).collect();
            let grid =
                hvq_train::report::reconstruction_grid(&models, &image, size, tch::Device::Cpu)?;
            grid.save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            let labels: Vec<&str> = models.iter().map(|(l, _)| l.as_str()).collect();
            println!("wrote {} (rows: {})", out.display(), labels.join(", "));
        }
        Command::Half { src, dst, int8 } => {
            let tensors = tch::Tensor::read_safetensors(&src)
                .with_context(|| format!("reading {}", src.display()))?;
            let out = hvq_train::lpips::compact_tensors(tensors, int8);
            tch::Tensor::write_safetensors(&out, &dst)
                .with_context(|| format!("writing {}", dst.display()))?;
            let how = if int8 {
                "int8 convolutions, other floats f16"
            } else {
                "f16"
            };
            println!("wrote {} tensors ({how}) to {}", out.len(), dst.display());
        }
        Command::Table { evals } => {
            let rows = evals
                .iter()
                .map(|e| {
                    let (label, path) = labelled(e);
                    hvq_train::report::EvalRow::read(&label, &path)
                })
                .collect::<Result<Vec<_>, _>>()?;
            println!(
                "{}\n{}",
                hvq_train::report::table1(&rows),
                hvq_train::report::table2(&rows)
            );
        }
        Command::Pack {
            data,
            out,
            images_per_shard,
        } => {
            let opts = hvq_train::shards::PackOptions {
                images_per_shard,
                ..Default::default()
            };
            let t = hvq_train::shards::pack(&data, &out, &opts)?;
            println!(
                "packed {} images ({} bytes) into {} shards in {}",
                t.images,
                t.bytes,
                t.shards,
                out.display()
            );
            if t.shared_keys > 0 {
                eprintln!(
                    "note: {} images share their WebDataset key (the name up to the first dot) with another; \
                     hvq reads them apart, a WebDataset reader would merge them",
                    t.shared_keys
                );
            }
        }
        Command::VerifyShards { data } => {
            let r = hvq_train::shards::verify(&data)?;
            println!(
                "{} shards, {} members, {} bytes: SHA-256 and headers match the index",
                r.shards, r.members, r.bytes
            );
        }
        Command::BenchData {
            data,
            size,
            limit,
            json,
        } => bench_data(&data, size, limit, json)?,
        Command::CodecBench(args) => {
            hvq_train::codec_bench::run(&args)?;
        }
        Command::Bench {
            presets,
            batch,
            size,
            reps,
            weights,
            device,
            precision,
            card,
            json,
        } => {
            let precision = match precision.as_str() {
                "bf16" => hvq_train::config::Precision::Bf16,
                _ => hvq_train::config::Precision::F32,
            };
            let opts = BenchOptions {
                batch,
                size,
                reps,
                precision,
                card,
                json,
            };
            bench(&presets, weights, device, &opts)?
        }
    }
    Ok(())
}

fn bench_data(data: &Path, size: u32, limit: Option<usize>, json: bool) -> Result<()> {
    let opened = std::time::Instant::now();
    let set = hvq_train::data::Dataset::open(data, &hvq_train::data::DataConfig::default())?;
    let open_s = opened.elapsed().as_secs_f64();
    let listed = if set.is_packed() {
        "shard index"
    } else if set.from_manifest() {
        "manifest"
    } else {
        "walk"
    };
    let mut files: Vec<hvq_train::data::ImageRef> =
        set.train().iter().chain(set.val()).cloned().collect();
    files.sort_by(|a, b| a.path().cmp(b.path()));
    files.truncate(limit.unwrap_or(usize::MAX));
    let t = hvq_train::data::time_pipeline(&files, size, 0);
    if json {
        let mut v = serde_json::to_value(&t)?;
        v["images_per_s_per_core"] = serde_json::json!(t.images_per_s());
        v["size"] = serde_json::json!(size);
        v["open_s"] = serde_json::json!(open_s);
        v["file_list"] = serde_json::json!(listed);
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} files listed by {listed} in {:.1} ms; decode: {}; resize: {}",
        set.train().len() + set.val().len(),
        1e3 * open_s,
        t.decode_path,
        t.resize_path
    );
    let total = t.decode_s + t.crop_resize_s + t.to_f32_s;
    let pct = |x: f64| 100.0 * x / total;
    println!(
        "{} images ({:.1} Mpx, {:.2} Mpx each) to {size}² crops on one core: {:.1} images/s \
         (decode {:.0} %, crop+resize {:.0} %, to f32 {:.0} %; {:.2} ms/image)",
        t.images,
        t.megapixels,
        t.megapixels / t.images.max(1) as f64,
        t.images_per_s(),
        pct(t.decode_s),
        pct(t.crop_resize_s),
        pct(t.to_f32_s),
        1e3 * total / t.images.max(1) as f64
    );
    Ok(())
}

fn train(
    config: &Path,
    resume: bool,
    device: Option<DeviceRequest>,
    steps: Option<u64>,
    stop_after: Option<u64>,
    change_horizon: bool,
) -> Result<()> {
    let mut cfg = TrainConfig::load(config)?;
    if let Some(s) = steps {
        cfg.schedule.steps = s;
        cfg.validate()?;
    }
    cfg.check_lpips()?;
    // Under torchrun (WORLD_SIZE > 1): one process per GPU, this one's being LOCAL_RANK.
    let world = hvq_train::distributed::World::from_env()?;
    // HVQ_NCCL=1: a single process goes through NCCL as well (the world-size-1 check on a GPU).
    let nccl_for_one = std::env::var_os("HVQ_NCCL").is_some_and(|v| v == "1");
    let device = match select_device(device.unwrap_or(cfg.device))? {
        tch::Device::Cpu if nccl_for_one => {
            anyhow::bail!("HVQ_NCCL=1 needs CUDA (NCCL), not the CPU")
        }
        tch::Device::Cuda(_) if world.is_distributed() => tch::Device::Cuda(world.local_rank),
        tch::Device::Cpu if world.is_distributed() => {
            anyhow::bail!(
                "WORLD_SIZE={} needs CUDA (NCCL), not the CPU",
                world.world_size
            )
        }
        d => d,
    };
    eprintln!(
        "training {} on {device:?} (rank {} of {}) -> {}",
        config.display(),
        world.rank,
        world.world_size,
        cfg.out_dir.display()
    );
    let group = hvq_train::distributed::connect(&world, nccl_for_one)?;
    let opts = RunOptions {
        resume,
        progress: true,
        command: command_line(),
        stop_after,
        change_horizon,
    };
    let last = hvq_train::train::run_with_group(&cfg, device, &opts, group)?;
    if let Some(s) = last {
        eprintln!("step {}: loss {:.4}", s.step, s.loss);
    }
    Ok(())
}

fn export(checkpoint: &Path, out: &Path, f16: bool, extra: &[String]) -> Result<()> {
    let path = if checkpoint.is_dir() {
        checkpoint.join("checkpoint.safetensors")
    } else {
        checkpoint.to_path_buf()
    };
    let weights = hvq_train::export::checkpoint_to_weights(&path, &command_line())?;
    let weights = hvq_train::export::with_extra_metadata(weights, extra)?;
    let dtype = if f16 {
        StoreDtype::F16
    } else {
        StoreDtype::F32
    };
    hvq_train::export::write_weights(out, &weights, dtype)?;
    // Read the file back: it checks what was written, and an f16 file's fingerprint is that
    // of its rounded codebook, not of the f32 one in memory.
    let weights = hvq_train::export::read_weights(out)?;
    println!(
        "wrote {} ({} steps, fingerprint {})",
        out.display(),
        weights
            .metadata()
            .get(hvq_spec::meta::TRAINED_STEPS)
            .map_or("?", String::as_str),
        hvq_spec::fingerprint_hex(&weights.fingerprint())
    );
    Ok(())
}

fn eval(
    weights: &Path,
    data: &Path,
    lpips: &Path,
    lpips_vgg: Option<&Path>,
    opts: &hvq_train::eval::EvalOptions,
    out: Option<PathBuf>,
    device: DeviceRequest,
) -> Result<()> {
    let device = select_device(device)?;
    let alex = Lpips::load(lpips, Net::Alex, device)?;
    let vgg = lpips_vgg
        .map(|p| Lpips::load(p, Net::Vgg, device))
        .transpose()?;
    let perceptual = hvq_train::eval::Perceptual {
        alex: Some(&alex),
        vgg: vgg.as_ref(),
    };
    let report = hvq_train::eval::evaluate(weights, data, perceptual, opts, device)?;
    let md = hvq_train::eval::markdown(&report);
    let dir = out.unwrap_or_else(|| weights.parent().map(Path::to_path_buf).unwrap_or_default());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("eval.md"), &md)?;
    std::fs::write(
        dir.join("eval.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!(
        "{md}\nwrote {} and {}",
        dir.join("eval.md").display(),
        dir.join("eval.json").display()
    );
    Ok(())
}

fn plot(logs: &[String], out: &Path, metric: String, smooth: usize) -> Result<()> {
    let runs: Vec<(String, PathBuf)> = logs.iter().map(|s| labelled(s)).collect();
    let opts = PlotOptions {
        metric,
        smooth,
        ..PlotOptions::default()
    };
    let msg = plot_losses(&runs, out, &opts)?;
    println!("{msg}");
    Ok(())
}

/// The `bench` subcommand's options besides presets, weights and device.
struct BenchOptions {
    batch: i64,
    size: i64,
    reps: usize,
    precision: hvq_train::config::Precision,
    card: Option<String>,
    json: Option<Option<PathBuf>>,
}

fn bench(
    presets: &[String],
    weights: Option<PathBuf>,
    device: DeviceRequest,
    opts: &BenchOptions,
) -> Result<()> {
    use hvq_train::bench as b;
    let device = select_device(device)?;
    let reps = opts.reps;
    let lpips = Path::new("../shared/data/lpips/vgg16.safetensors");
    let lpips = lpips.is_file().then_some(lpips);
    let card = b::device_name(device, opts.card.as_deref());
    let card_peaks = device.is_cuda().then(|| b::card_peaks(&card)).flatten();
    let mut peaks = card_peaks.map(|c| c.peaks()).unwrap_or_default();
    peaks.extend(b::measure_peaks(device, reps.max(5))?);
    let mut steps = Vec::new();
    for p in presets {
        let step = b::StepBench {
            preset: p,
            batch: opts.batch,
            size: opts.size,
            lpips,
            precision: opts.precision,
        };
        let mut t = b::time_train_step(&step, reps, device)?;
        t.rate_against(&peaks);
        eprintln!("{}", serde_json::to_string(&t)?);
        steps.push(t);
    }
    let w = match &weights {
        Some(p) => hvq_train::export::read_weights(p)?,
        None => b::random_preset_weights("small")?,
    };
    let label = weights
        .as_ref()
        .map_or("random small".to_string(), |p| p.display().to_string());
    let codec = b::time_codec(&w, &[(256, 256), (768, 512)], reps, device)?;
    for t in &codec {
        eprintln!("{}", serde_json::to_string(t)?);
    }
    let report = b::BenchReport {
        device: format!("{device:?}"),
        card,
        card_peaks,
        torch: b::torch_version(),
        threads: tch::get_num_threads(),
        peaks,
        steps,
        codec_weights: label,
        codec,
    };
    match &opts.json {
        Some(None) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        Some(Some(path)) => std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?,
        None => {}
    }
    print_bench(&report, reps);
    Ok(())
}

fn print_bench(r: &hvq_train::bench::BenchReport, reps: usize) {
    println!(
        "device {} ({}), torch {}, libtorch threads {}",
        r.device,
        r.card,
        r.torch.as_deref().unwrap_or("?"),
        r.threads
    );
    let peaks: Vec<String> = r
        .peaks
        .iter()
        .map(|p| format!("{} {:.3}", p.name, p.tflops))
        .collect();
    println!("peaks, TFLOP/s: {}", peaks.join(", "));
    // Beside the achieved rate: the card's dense tensor-core figure of the step's precision
    // (cuDNN runs f32 convolutions on TF32 by default) and the measured product of that
    // precision (f32 when bf16 was not measured).
    let pct = |t: &hvq_train::bench::StepTiming, card: bool| {
        let bf16 = t.perf.precision == hvq_train::config::Precision::Bf16;
        let found = r.peaks.iter().find(|p| match (card, bf16) {
            (true, false) => p.name == "card TF32 dense",
            (true, true) => p.name == "card BF16 dense",
            (false, false) => p.name.starts_with("matmul f32"),
            (false, true) => p.name.starts_with("matmul bf16"),
        });
        found.map_or("–".to_string(), |p| {
            format!("{:.1} ({})", 100.0 * t.of_peak[&p.name], p.name)
        })
    };
    println!(
        "\n| preset | batch | size | LPIPS | precision | ms / step | images / s \
         | model fwd GFLOP / image | step GFLOP / image | TFLOP/s | % card peak | % measured matmul |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for t in &r.steps {
        println!(
            "| {} | {} | {} | {} | {:?} | {:.0} | {:.2} | {:.1} | {:.1} | {:.3} | {} | {} |",
            t.preset,
            t.batch,
            t.size,
            t.lpips,
            t.perf.precision,
            t.ms,
            t.images_per_s,
            t.model_forward_gflop,
            t.step_gflop,
            t.tflops,
            pct(t, true),
            pct(t, false)
        );
    }
    println!(
        "\nlibtorch encode/decode of {} (batch 1, median of {reps})\n",
        r.codec_weights
    );
    println!("| size | encode ms | decode ms per level (finest first) |\n|---|---|---|");
    for t in &r.codec {
        let d: Vec<String> = t.decode_ms.iter().map(|m| format!("{m:.0}")).collect();
        println!(
            "| {}x{} | {:.0} | {} |",
            t.width,
            t.height,
            t.encode_ms,
            d.join(" / ")
        );
    }
}
