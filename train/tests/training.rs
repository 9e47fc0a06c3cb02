//! Training-loop tests on the tiny preset: overfitting, exact resume, codebook options,
//! config errors. Batches are generated in memory (the data loader has its own tests).

use std::path::Path;

use hvq_train::TrainError;
use hvq_train::config::TrainConfig;
use hvq_train::train::Trainer;
use tch::{Device, Kind, Tensor};

fn config(extra: &str) -> TrainConfig {
    let text = format!(
        "preset = \"tiny\"\ndata_dir = \"unused\"\nout_dir = \"unused\"\nseed = 5\n{extra}\n[data]\nimage_size = 16\n[loss]\nperceptual = 0.0\n"
    );
    TrainConfig::parse(&text, Path::new("test.toml")).unwrap()
}

/// Eight smooth 16×16 images: gradients with a per-image colour and phase.
fn eight_images() -> Tensor {
    let y = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 16, 1]) / 15.0;
    let x = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 1, 16]) / 15.0;
    let imgs: Vec<Tensor> = (0..8)
        .map(|i| {
            let f = i as f64 / 8.0;
            let r = (&x * (1.0 - f) + &y * f).expand([1, 1, 16, 16], false);
            let g = ((&x + &y) * 0.5 + f).remainder(1.0);
            let b = (&y * 0.0 + f).expand([1, 1, 16, 16], false);
            Tensor::cat(&[r, g, b], 1)
        })
        .collect();
    Tensor::cat(&imgs, 0)
}

/// A batch that depends only on the step, like the loader's.
fn batch_for(step: u64) -> Tensor {
    let imgs = eight_images();
    imgs.roll([step as i64], [0]).narrow(0, 0, 4)
}

#[test]
fn tiny_config_overfits_eight_images() {
    single_thread();
    let cfg = config(
        "[schedule]\nsteps = 100\nbatch = 8\nlr = 3e-3\nwarmup_steps = 5\ndecay = \"constant\"",
    );
    let mut t = Trainer::new(&cfg, Device::Cpu).unwrap();
    let x = eight_images();
    let l1 = |s: &hvq_train::train::StepStats| s.levels.iter().map(|l| l.l1).sum::<f64>();
    let first = t.train_step(&x).unwrap();
    let mut last = first.clone();
    for _ in 1..100 {
        last = t.train_step(&x).unwrap();
    }
    eprintln!(
        "summed L1 {} -> {}, loss {} -> {}",
        l1(&first),
        l1(&last),
        first.loss,
        last.loss
    );
    // Measured: the summed L1 falls by about 80% in 150 steps; assert at least half.
    assert!(
        l1(&last) <= 0.5 * l1(&first),
        "L1 {} -> {}",
        l1(&first),
        l1(&last)
    );
    assert!(last.loss < first.loss);
}

fn params(t: &Trainer) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = t.varstore().variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn resume_matches(extra: &str) {
    let cfg = config(&format!(
        "[schedule]\nsteps = 6\nbatch = 4\nlr = 1e-3\nwarmup_steps = 2\n{extra}"
    ));
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint.safetensors");
    let mut a = Trainer::new(&cfg, Device::Cpu).unwrap();
    for s in 0..6 {
        a.train_step(&batch_for(s)).unwrap();
    }
    let mut b = Trainer::new(&cfg, Device::Cpu).unwrap();
    for s in 0..3 {
        b.train_step(&batch_for(s)).unwrap();
    }
    b.save_checkpoint(&ckpt).unwrap();
    drop(b);
    let mut c = Trainer::new(&cfg, Device::Cpu).unwrap();
    c.load_checkpoint(&ckpt).unwrap();
    assert_eq!(c.step(), 3);
    for s in 3..6 {
        c.train_step(&batch_for(s)).unwrap();
    }
    for ((name, pa), (_, pc)) in params(&a).iter().zip(params(&c)) {
        assert!(pa.equal(&pc), "{name} differs after resume ({extra})");
    }
}

#[test]
fn resume_after_checkpoint_is_bit_identical() {
    single_thread();
    resume_matches("");
}

#[test]
fn resume_is_bit_identical_with_ema_and_dead_code_restart() {
    single_thread();
    resume_matches("[codebook]\nmode = \"ema\"\nrestart_dead = true\nrestart_every = 2");
}

#[test]
fn resume_is_bit_identical_with_every_shared_codebook_switch_on() {
    single_thread();
    resume_matches(
        "[init]\nscheme = \"torch\"\nzero_downconv = true\n[codebook]\nkmeans_init = true\nkmeans_step = 4\nlevel_quotas = true\nrestart_dead = true\nrestart_every = 2\nrestart_resets_optimizer = true\nlr_scale = 5.0",
    );
    resume_matches(
        "[codebook]\nmode = \"ema\"\nema_level_weights = true\nrestart_dead = true\nrestart_every = 2\nlevel_quotas = true",
    );
}

#[test]
fn kmeans_init_places_entries_on_latents() {
    single_thread();
    let cfg = config("[codebook]\nkmeans_init = true\nkmeans_iters = 5");
    let mut t = Trainer::new(&cfg, Device::Cpu).unwrap();
    let before = t.model().codebook().detach().copy();
    t.kmeans_init(&eight_images());
    let after = t.model().codebook().detach();
    assert!(!before.equal(&after));
    // taming's init is within ±1/N; k-means centres are latent means, far larger.
    assert!(after.abs().max().double_value(&[]) > 1.0 / 32.0);
    let s = t.train_step(&eight_images()).unwrap();
    assert!(s.loss.is_finite());
}

#[test]
fn schedule_warms_up_then_decays() {
    single_thread();
    let cfg = config("[schedule]\nsteps = 100\nlr = 1e-3\nwarmup_steps = 10\nmin_lr_ratio = 0.1");
    let s = &cfg.schedule;
    assert!((s.lr_at(0) - 1e-4).abs() < 1e-12);
    assert!((s.lr_at(9) - 1e-3).abs() < 1e-12);
    assert!(s.lr_at(50) < 1e-3 && s.lr_at(50) > 1e-4);
    assert!((s.lr_at(100) - 1e-4).abs() < 1e-9);
}

fn parse_err(text: &str) -> TrainError {
    TrainConfig::parse(text, Path::new("bad.toml")).unwrap_err()
}

#[test]
fn bad_configs_are_clear_errors() {
    single_thread();
    let base = "preset = \"tiny\"\ndata_dir = \"d\"\nout_dir = \"o\"\n";
    match parse_err(&format!("{base}[schedule]\nbatch = 0")) {
        TrainError::BadConfig { field, .. } => assert_eq!(field, "schedule.batch"),
        e => panic!("{e}"),
    }
    match parse_err(&format!("{base}[data]\nimage_size = 20")) {
        TrainError::BadConfig { field, reason } => {
            assert_eq!(field, "data.image_size");
            assert!(
                reason.contains("multiple of the coarsest stride 8"),
                "{reason}"
            );
        }
        e => panic!("{e}"),
    }
    match parse_err(&format!("{base}lerning_rate = 3")) {
        TrainError::ConfigParse { source, .. } => {
            assert!(source.to_string().contains("lerning_rate"))
        }
        e => panic!("{e}"),
    }
    assert!(matches!(
        parse_err("preset = \"huge\"\ndata_dir = \"d\"\nout_dir = \"o\"\n"),
        TrainError::Spec(_)
    ));
    assert!(matches!(
        parse_err(&format!("{base}[model]\nnorm_groups = 3")),
        TrainError::Spec(_)
    ));
}

#[test]
fn missing_lpips_file_is_a_clear_error() {
    single_thread();
    let text = "preset = \"tiny\"\ndata_dir = \"d\"\nout_dir = \"o\"\nlpips_path = \"/nonexistent/vgg16.safetensors\"\n[data]\nimage_size = 16\n";
    let cfg = TrainConfig::parse(text, Path::new("t.toml")).unwrap();
    match Trainer::new(&cfg, Device::Cpu) {
        Err(TrainError::MissingLpips { path }) => assert!(path.ends_with("vgg16.safetensors")),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a missing LPIPS file must be refused"),
    }
}

/// libtorch's intra-op threads spin-wait; on a shared 2-core machine that makes tiny
/// models 10-20x slower than one thread, so tests use one.
fn single_thread() {
    tch::set_num_threads(1);
}

#[test]
fn shipped_configs_parse_and_validate() {
    single_thread();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for sub in [dir.clone(), dir.join("suite-cpu")] {
        for entry in std::fs::read_dir(&sub).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg =
                    TrainConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(cfg.model_config().is_ok(), "{}", path.display());
                checked += 1;
            }
        }
    }
    // 4 top-level configs and the 14 of the CPU-scale suite.
    assert!(checked >= 18, "only {checked} configs found");
}

/// The loop's path (`advance`, statistics read back later) reports what `train_step` does.
#[test]
fn statistics_read_back_later_are_those_of_the_step() {
    single_thread();
    let cfg = config("[schedule]\nsteps = 10\nbatch = 4\nlr = 1e-3\nwarmup_steps = 2");
    let mut a = Trainer::new(&cfg, Device::Cpu).unwrap();
    let mut b = Trainer::new(&cfg, Device::Cpu).unwrap();
    assert!(matches!(b.last_stats(), Err(TrainError::NoStep)));
    for s in 0..3 {
        let sa = a.train_step(&batch_for(s)).unwrap();
        b.advance(&batch_for(s)).unwrap();
        let sb = b.last_stats().unwrap();
        assert_eq!(
            serde_json::to_value(&sa).unwrap(),
            serde_json::to_value(&sb).unwrap()
        );
        assert_eq!(sb.step, s + 1);
        assert!(sb.levels.iter().all(|l| l.usage > 0 && l.total.is_finite()));
    }
}

/// A u8 batch is the f32 batch divided by 255 on the device.
#[test]
fn a_u8_batch_trains_like_its_f32_copy() {
    single_thread();
    let cfg = config("[schedule]\nsteps = 10\nbatch = 4\nlr = 1e-3\nwarmup_steps = 2");
    let bytes = (batch_for(0) * 255.0).round().to_kind(Kind::Uint8);
    let mut a = Trainer::new(&cfg, Device::Cpu).unwrap();
    let mut b = Trainer::new(&cfg, Device::Cpu).unwrap();
    let sa = a.train_step(&(bytes.to_kind(Kind::Float) / 255.0)).unwrap();
    let sb = b.train_step(&bytes).unwrap();
    assert_eq!(sa.loss, sb.loss);
}

/// bf16 convolutions: the quantizer still sees f32 latents and codes, and the model trains.
#[test]
fn a_bf16_step_keeps_the_quantizer_in_f32_and_trains() {
    single_thread();
    let cfg = config(
        "[schedule]\nsteps = 40\nbatch = 8\nlr = 3e-3\nwarmup_steps = 2\ndecay = \"constant\"\n[perf]\nprecision = \"bf16\"",
    );
    let mut t = Trainer::new(&cfg, Device::Cpu).unwrap();
    let x = eight_images();
    let first = t.train_step(&x).unwrap();
    let mut last = first.clone();
    for _ in 1..40 {
        last = t.train_step(&x).unwrap();
    }
    eprintln!("bf16: loss {} -> {}", first.loss, last.loss);
    assert!(last.loss.is_finite() && last.loss < first.loss);
    let outs = tch::no_grad(|| t.model().forward(&t.model().normalize(&x)));
    for o in &outs {
        assert_eq!(o.latent.kind(), Kind::Float);
        assert_eq!(o.quantized.kind(), Kind::Float);
        assert_eq!(o.tokens.kind(), Kind::Int64);
        assert_eq!(o.recon.kind(), Kind::BFloat16);
    }
    assert_eq!(t.model().codebook().kind(), Kind::Float);
}

/// With LPIPS on, the perceptual term (target features once, levels in one batch) is part of
/// every level's loss.
#[test]
fn the_perceptual_term_reaches_every_level() {
    single_thread();
    let lpips =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lpips/vgg16.safetensors");
    let mut cfg = config("[schedule]\nsteps = 10\nbatch = 4\nlr = 1e-3\nwarmup_steps = 2");
    cfg.loss.perceptual = 1.0;
    cfg.lpips_path = lpips;
    let mut t = Trainer::new(&cfg, Device::Cpu).unwrap();
    let s = t.train_step(&batch_for(0)).unwrap();
    for l in &s.levels {
        assert!(l.perceptual > 0.0 && l.perceptual.is_finite(), "{l:?}");
        let sum = l.l1 + l.perceptual + l.codebook + l.commit;
        assert!((l.total - sum).abs() <= 1e-5 * sum, "{l:?}");
    }
}
