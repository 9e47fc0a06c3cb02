//! The shared-codebook switches (initialisation, k-means warm-up, per-level quotas, restarts
//! that reset Adam, codebook learning-rate scale; their exact resume is tested in training.rs
//! beside the other resume tests) and the run hygiene around them (learning-rate
//! horizon kept across resume, non-finite loss, previous checkpoint kept, usage windows and
//! validation records in the log). Tiny preset, in-memory or generated data.

use std::path::Path;

use hvq_train::TrainError;
use hvq_train::config::TrainConfig;
use hvq_train::train::{RunOptions, Trainer, run};
use tch::{Device, Tensor};

fn config(extra: &str) -> TrainConfig {
    let text = format!(
        "preset = \"tiny\"\ndata_dir = \"unused\"\nout_dir = \"unused\"\nseed = 3\n{extra}\n"
    );
    TrainConfig::parse(&with_tiny_data(&text), Path::new("test.toml")).unwrap()
}

/// Adds the `[data]` and `[loss]` tables a tiny CPU run needs unless `text` has its own.
fn with_tiny_data(text: &str) -> String {
    let mut t = text.to_string();
    if !t.contains("[data]") {
        t += "\n[data]\nimage_size = 16\nval_count = 2\nworkers = 1\nprefetch = 1\n";
    }
    if !t.contains("[loss]") {
        t += "\n[loss]\nperceptual = 0.0\n";
    }
    t
}

/// Four random 16×16 images, a pure function of `seed`: drawn from a local ChaCha generator,
/// not from libtorch's process-global RNG, which tests running in parallel threads share.
fn images(seed: i64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed as u64);
    let v: Vec<f32> = (0..4 * 3 * 16 * 16).map(|_| rng.random::<f32>()).collect();
    Tensor::from_slice(&v).view([4, 3, 16, 16])
}

fn var(t: &Trainer, name: &str) -> Tensor {
    t.varstore()
        .variables()
        .remove(name)
        .unwrap_or_else(|| panic!("no variable {name}"))
        .detach()
        .copy()
}

/// A tiny model trained for 3 steps, and an `[init]` table that starts from its exported weights
/// (written into `dir`).
fn donor_weights(dir: &Path) -> (Trainer, String) {
    let mut donor = Trainer::new(
        &config("[schedule]\nsteps = 4\nbatch = 4\nlr = 1e-3\nwarmup_steps = 1"),
        Device::Cpu,
    )
    .unwrap();
    for _ in 0..3 {
        donor.train_step(&images(5)).unwrap();
    }
    let file = dir.join("donor.safetensors");
    let weights = donor.export("test images", "test").unwrap();
    hvq_train::export::write_weights(&file, &weights, hvq_spec::StoreDtype::F32).unwrap();
    let from = format!("[init]\nfrom = {:?}", file.display().to_string());
    (donor, from)
}

#[test]
fn torch_init_bounds_every_conv_by_one_over_root_fan_in() {
    tch::set_num_threads(1);
    let t = Trainer::new(&config("[init]\nscheme = \"torch\""), Device::Cpu).unwrap();
    let tch_default = Trainer::new(&config(""), Device::Cpu).unwrap();
    let mut convs = 0;
    for (name, w) in t.varstore().variables() {
        if !name.ends_with(".weight") || w.dim() != 4 {
            continue;
        }
        convs += 1;
        let s = w.size();
        let bound = 1.0 / ((s[1] * s[2] * s[3]) as f64).sqrt();
        let max = w.abs().max().double_value(&[]);
        assert!(max <= bound + 1e-7, "{name}: {max} > {bound}");
        let bias = t.varstore().variables()[&name.replace(".weight", ".bias")].shallow_clone();
        assert!(
            bias.abs().max().double_value(&[]) <= bound + 1e-7,
            "{name} bias"
        );
        // PyTorch's default has 1/6 of tch's weight variance (uniform bounds 1 vs √6).
        let var_ratio =
            w.var(false).double_value(&[]) / var(&tch_default, &name).var(false).double_value(&[]);
        if s.iter().product::<i64>() >= 256 {
            assert!(
                (0.1..0.3).contains(&var_ratio),
                "{name}: variance ratio {var_ratio}"
            );
        }
    }
    assert!(convs > 10, "found only {convs} convolutions");
}

#[test]
fn zero_downconv_makes_coarse_levels_average_pools_at_start() {
    tch::set_num_threads(1);
    let t = Trainer::new(&config("[init]\nzero_downconv = true"), Device::Cpu).unwrap();
    let x = t.model().normalize(&images(1));
    let zs = tch::no_grad(|| t.model().level_latents(&x));
    for l in 1..zs.len() {
        let pooled = zs[l - 1].avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
        assert!(zs[l].allclose(&pooled, 1e-6, 1e-6, false), "level {l}");
    }
}

#[test]
fn kmeans_warmup_feeds_unquantized_latents_then_initialises_the_codebook() {
    tch::set_num_threads(1);
    let cfg = config(
        "[schedule]\nsteps = 8\nbatch = 4\nlr = 1e-3\nwarmup_steps = 1\n[codebook]\nkmeans_init = true\nkmeans_step = 3\nlevel_quotas = true",
    );
    let mut t = Trainer::new(&cfg, Device::Cpu).unwrap();
    let initial = t.model().codebook().detach().copy();
    for k in 0..3 {
        let s = t.train_step(&images(k)).unwrap();
        assert!(s.warmup, "step {k} is a warm-up step");
        assert_eq!(s.levels[0].codebook, 0.0);
        assert_eq!(s.levels[0].commit, 0.0);
        if k < 2 {
            assert!(
                t.model().codebook().equal(&initial),
                "no codebook change during warm-up"
            );
        }
    }
    // The third step ended the warm-up: the k-means has replaced the ±1/N init.
    assert!(t.model().codebook().abs().max().double_value(&[]) > 1.0 / 32.0);
    let s = t.train_step(&images(3)).unwrap();
    assert!(!s.warmup);
    assert!(s.levels[0].commit > 0.0);
}

#[test]
fn codebook_lr_scale_zero_freezes_the_codebook_only() {
    tch::set_num_threads(1);
    let cfg = config("[schedule]\nsteps = 4\nlr = 1e-2\n[codebook]\nlr_scale = 0.0");
    let mut t = Trainer::new(&cfg, Device::Cpu).unwrap();
    let cb = t.model().codebook().detach().copy();
    let conv = var(&t, "encoder.conv_in.weight");
    t.train_step(&images(0)).unwrap();
    assert!(t.model().codebook().equal(&cb));
    assert!(!var(&t, "encoder.conv_in.weight").equal(&conv));
}

#[test]
fn a_non_finite_loss_is_its_own_error_and_changes_nothing() {
    tch::set_num_threads(1);
    let mut t = Trainer::new(&config(""), Device::Cpu).unwrap();
    let before = var(&t, "encoder.conv_in.weight");
    let mut bad = images(0);
    let _ = bad.fill_(f64::NAN);
    match t.train_step(&bad) {
        Err(TrainError::NonFiniteLoss { step, loss, levels }) => {
            assert_eq!(step, 1);
            assert!(loss.is_nan());
            assert_eq!(levels.len(), 3);
        }
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
    assert_eq!(t.step(), 0);
    assert!(var(&t, "encoder.conv_in.weight").equal(&before));
}

#[test]
fn bad_sharing_switches_are_clear_config_errors() {
    let base = "preset = \"tiny\"\ndata_dir = \"d\"\nout_dir = \"o\"\n[data]\nimage_size = 16\n";
    for (extra, field) in [
        ("[codebook]\nlr_scale = -1.0", "codebook.lr_scale"),
        ("[codebook]\nkmeans_step = 5", "codebook.kmeans_step"),
        (
            "[schedule]\nsteps = 10\n[codebook]\nkmeans_init = true\nkmeans_step = 10",
            "codebook.kmeans_step",
        ),
    ] {
        match TrainConfig::parse(&format!("{base}{extra}"), Path::new("t.toml")) {
            Err(TrainError::BadConfig { field: f, .. }) => assert_eq!(f, field, "{extra}"),
            other => panic!("{extra}: expected BadConfig, got {other:?}"),
        }
    }
    assert!(matches!(
        TrainConfig::parse(
            &format!("{base}[init]\nscheme = \"xavier\""),
            Path::new("t.toml")
        ),
        Err(TrainError::ConfigParse { .. })
    ));
}

/// Writes `n` distinct 24×20 PNGs into `dir`.
fn write_images(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(24, 20, |x, y| {
            image::Rgb([(x * 9 + i as u32 * 31) as u8, (y * 13) as u8, (x * y) as u8])
        });
        img.save(dir.join(format!("img{i:02}.png"))).unwrap();
    }
}

fn run_config(dir: &Path, steps: u64) -> TrainConfig {
    let text = format!(
        "preset = \"tiny\"\ndata_dir = \"{}\"\nout_dir = \"{}\"\nseed = 1\ncheckpoint_every = 2\nlog_every = 2\nval_every = 2\nval_images = 2\ndevice = \"cpu\"\n[schedule]\nsteps = {steps}\nbatch = 2\nlr = 1e-3\nwarmup_steps = 1\n",
        dir.join("data").display(),
        dir.join("run").display()
    );
    TrainConfig::parse(&with_tiny_data(&text), Path::new("run.toml")).unwrap()
}

fn options(resume: bool, stop_after: Option<u64>, change_horizon: bool) -> RunOptions {
    RunOptions {
        resume,
        progress: false,
        command: "test".into(),
        stop_after,
        change_horizon,
    }
}

#[test]
fn the_learning_rate_horizon_survives_resume_and_stop_after_leaves_it_alone() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("data"), 8);
    let cfg = run_config(dir.path(), 6);
    let first = run(&cfg, Device::Cpu, &options(false, Some(2), false))
        .unwrap()
        .unwrap();
    assert_eq!(first.step, 2);
    // The rate of a 6-step horizon, not of a 2-step one (which would already be at its floor).
    assert!((first.lr - cfg.schedule.lr_at(1)).abs() < 1e-15);

    // Resuming towards another horizon is refused and names the way out.
    let longer = run_config(dir.path(), 10);
    match run(&longer, Device::Cpu, &options(true, None, false)) {
        Err(TrainError::BadConfig { field, reason }) => {
            assert_eq!(field, "schedule.steps");
            assert!(reason.contains("--stop-after") && reason.contains("--change-horizon"));
        }
        other => panic!("expected a horizon error, got {other:?}"),
    }
    // The same horizon resumes to its end.
    let last = run(&cfg, Device::Cpu, &options(true, None, false))
        .unwrap()
        .unwrap();
    assert_eq!(last.step, 6);
    assert!((last.lr - cfg.schedule.lr_at(5)).abs() < 1e-15);
    // A deliberate new horizon is accepted.
    let more = run(&longer, Device::Cpu, &options(true, None, true))
        .unwrap()
        .unwrap();
    assert_eq!(more.step, 10);

    let run_dir = dir.path().join("run");
    assert!(run_dir.join("checkpoint.prev.safetensors").is_file());
    assert!(!run_dir.join("checkpoint.safetensors.tmp").exists());
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let windows: Vec<&serde_json::Value> = records.iter().filter_map(|r| r.get("window")).collect();
    assert!(!windows.is_empty());
    for w in &windows {
        // Every logged window covers the two steps since the previous log line.
        assert_eq!(w["steps"], 2);
        let tokens = w["levels"][0]["tokens"].as_u64().unwrap();
        assert_eq!(
            tokens,
            2 * 2 * 8 * 8,
            "2 steps × batch 2 × the 8×8 level-0 grid"
        );
        assert!(w["used_by_all_chance"].as_f64().is_some());
    }
    let vals: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r.get("split").and_then(|s| s.as_str()) == Some("val"))
        .collect();
    assert_eq!(vals.len(), 5, "validation at steps 2, 4, 6, 8, 10");
    assert_eq!(vals[0]["images"], 2);
    assert!(vals[0]["levels"][1]["val_l1"].as_f64().unwrap() > 0.0);
}

/// `init.from` starts a model from exported weights: every tensor as in the file (f32, or f16
/// rounded), `zero_downconv` applied on top of them, another model's file refused, the file's
/// trained steps counted in the next export.
#[test]
fn a_warm_start_continues_exported_weights() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let (donor, from) = donor_weights(dir.path());

    let warm = Trainer::new(&config(&from), Device::Cpu).unwrap();
    let donor_vars = donor.varstore().variables();
    for (name, v) in warm.varstore().variables() {
        assert!(v.equal(&donor_vars[&name]), "{name} differs from the file");
    }
    let exported = warm.export("test images", "test").unwrap();
    assert_eq!(exported.metadata()[hvq_spec::meta::TRAINED_STEPS], "3");
    // `hvq-train export` of the warm run's checkpoint counts them too.
    let ckpt = dir.path().join("warm-checkpoint.safetensors");
    warm.save_checkpoint(&ckpt).unwrap();
    let from_ckpt = hvq_train::export::checkpoint_to_weights(&ckpt, "test").unwrap();
    assert_eq!(from_ckpt.metadata()[hvq_spec::meta::TRAINED_STEPS], "3");

    // pooling → convpool keeps the tensors; zero_downconv clears only the conv branch.
    let zeroed = Trainer::new(
        &config(&format!(
            "[model]\nstrategy = \"convpool\"\n{from}\nzero_downconv = true"
        )),
        Device::Cpu,
    )
    .unwrap();
    let mut downconvs = 0;
    for (name, v) in zeroed.varstore().variables() {
        if name.contains(".down.conv.") {
            downconvs += 1;
            assert_eq!(v.abs().max().double_value(&[]), 0.0, "{name}");
        } else {
            assert!(v.equal(&donor_vars[&name]), "{name} changed");
        }
    }
    assert!(downconvs > 0);

    // Weights of another model are a config error naming the field, not a panic.
    // (sampling has no down-convolutions, so its tensors differ too.)
    for model in ["z_channels = 4", "strategy = \"sampling\""] {
        let other = format!("[model]\n{model}\n{from}");
        match Trainer::new(&config(&other), Device::Cpu) {
            Err(TrainError::BadConfig { field, reason }) => {
                assert_eq!(field, "init.from", "{model}");
                assert!(reason.contains("another model"), "{reason}");
            }
            other => panic!("{model}: expected BadConfig, got {:?}", other.err()),
        }
    }
    let missing = "[init]\nfrom = \"no-such-weights.safetensors\"";
    assert!(matches!(
        Trainer::new(&config(missing), Device::Cpu),
        Err(TrainError::Io { .. })
    ));
}

#[test]
fn training_only_the_decoders_keeps_every_token_and_improves_the_reconstructions() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let (donor, from) = donor_weights(dir.path());

    let mut tuned = Trainer::new(
        &config(&format!(
            "trainable = \"decoders\"\n[schedule]\nsteps = 20\nbatch = 4\nlr = 1e-3\nwarmup_steps = 1\n{from}"
        )),
        Device::Cpu,
    )
    .unwrap();
    let batch = images(6);
    let first = tuned.train_step(&batch).unwrap();
    let mut last = first.clone();
    for _ in 0..15 {
        last = tuned.train_step(&batch).unwrap();
    }
    let l1 = |s: &hvq_train::train::StepStats| s.levels.iter().map(|l| l.l1).sum::<f64>();
    assert!(
        l1(&last) < l1(&first),
        "decoder training did not fit the batch: {} -> {}",
        l1(&first),
        l1(&last)
    );

    let donor_vars = donor.varstore().variables();
    let mut moved = 0;
    for (name, v) in tuned.varstore().variables() {
        if name.starts_with("decoders.") {
            moved += usize::from(!v.equal(&donor_vars[&name]));
        } else {
            assert!(
                v.equal(&donor_vars[&name]),
                "{name} changed although frozen"
            );
            assert!(!v.requires_grad(), "{name} still asks for a gradient");
        }
    }
    assert!(moved > 0, "no decoder variable was trained");
    let (a, b) = tch::no_grad(|| {
        let x = images(7);
        (
            donor.model().encode_tokens(&x),
            tuned.model().encode_tokens(&x),
        )
    });
    for (level, (a, b)) in a.iter().zip(&b).enumerate() {
        assert!(a.equal(b), "level {level}'s tokens changed");
    }

    // Every option that would move a token is refused with the field that does.
    for (extra, field) in [
        ("", "init.from"),
        (
            &*format!("{from}\nzero_downconv = true"),
            "init.zero_downconv",
        ),
        (
            &*format!("[codebook]\nmode = \"ema\"\n{from}"),
            "codebook.mode",
        ),
        (
            &*format!("[codebook]\nrestart_dead = true\n{from}"),
            "codebook.restart_dead",
        ),
        (
            &*format!("[codebook]\nkmeans_init = true\n{from}"),
            "codebook.kmeans_init",
        ),
    ] {
        let text = format!(
            "preset = \"tiny\"\ndata_dir = \"unused\"\nout_dir = \"unused\"\ntrainable = \"decoders\"\n{extra}\n"
        );
        match TrainConfig::parse(&with_tiny_data(&text), Path::new("test.toml")) {
            Err(TrainError::BadConfig { field: f, reason }) => {
                assert_eq!(f, field, "{extra}");
                assert!(reason.contains("keeps every token"), "{reason}");
            }
            other => panic!("{extra}: expected BadConfig, got {other:?}"),
        }
    }
}
