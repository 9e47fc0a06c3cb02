//! Data-parallel training on the CPU: the launcher's environment, the in-process group, and
//! ranks in threads that must agree with each other and with one process on the whole batch.
//! (NCCL itself needs GPUs and is not exercised here.)

use std::path::Path;
use std::sync::Arc;

use hvq_train::TrainError;
use hvq_train::config::TrainConfig;
use hvq_train::distributed::{Collective, LocalGroup, World, shard};
use hvq_train::train::{RunOptions, Trainer, run, run_with_group};
use tch::{Device, Kind, Tensor};

fn config(extra: &str) -> TrainConfig {
    let text = format!(
        "preset = \"tiny\"\ndata_dir = \"unused\"\nout_dir = \"unused\"\nseed = 5\n[schedule]\nsteps = 8\nbatch = 4\nlr = 1e-3\nwarmup_steps = 2\n{extra}\n[data]\nimage_size = 16\n[loss]\nperceptual = 0.0\n"
    );
    TrainConfig::parse(&text, Path::new("test.toml")).unwrap()
}

/// Eight 16×16 images of deterministic noise: distinct latents everywhere, so that no token
/// of the test sits on a tie between entries that rounding could break either way (the smooth
/// images of training.rs have many equal latents, and k-means then makes equal entries).
fn eight_images() -> Tensor {
    let i = Tensor::arange(8 * 3 * 16 * 16, (Kind::Double, Device::Cpu));
    let noise = ((i * 12.9898 + 78.233).sin() * 43758.5453).frac().abs();
    noise.to_kind(Kind::Float).view([8, 3, 16, 16])
}

/// The global batch of a step (4 images), depending only on the step.
fn batch_for(step: u64) -> Tensor {
    eight_images().roll([step as i64 * 3], [0]).narrow(0, 0, 4)
}

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

const TORCHRUN: [(&str, &str); 5] = [
    ("WORLD_SIZE", "4"),
    ("RANK", "2"),
    ("LOCAL_RANK", "2"),
    ("MASTER_ADDR", "127.0.0.1"),
    ("MASTER_PORT", "29500"),
];

/// `TORCHRUN` with `var` replaced by `value` (or removed when `None`).
fn torchrun_with(var: &str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<_> = TORCHRUN
        .iter()
        .copied()
        .filter(|(k, _)| *k != var)
        .collect();
    if let Some(value) = value {
        let key = TORCHRUN
            .iter()
            .map(|(k, _)| *k)
            .find(|k| *k == var)
            .unwrap_or("HVQ_NCCL_PORT");
        v.push((key, value));
    }
    v
}

#[test]
fn launcher_environment_parses_and_bad_values_are_typed_errors() {
    assert_eq!(World::parse(env(&[])).unwrap(), World::SINGLE);
    assert_eq!(
        World::parse(env(&[("WORLD_SIZE", "1"), ("RANK", "0")])).unwrap(),
        World::SINGLE
    );
    let w = World::parse(env(&TORCHRUN)).unwrap();
    assert_eq!((w.rank, w.world_size, w.local_rank), (2, 4, 2));
    assert_eq!((w.master_addr.as_str(), w.id_port), ("127.0.0.1", 29501));
    assert!(w.is_distributed());
    let w = World::parse(env(&torchrun_with("HVQ_NCCL_PORT", Some("31000")))).unwrap();
    assert_eq!(w.id_port, 31000);

    for var in ["RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"] {
        match World::parse(env(&torchrun_with(var, None))) {
            Err(TrainError::LaunchEnvMissing { var: v }) => assert_eq!(v, var),
            other => panic!("{var} missing: {other:?}"),
        }
    }
    for (var, value) in [
        ("WORLD_SIZE", "four"),
        ("WORLD_SIZE", "0"),
        ("RANK", "-1"),
        ("LOCAL_RANK", ""),
        ("MASTER_PORT", "70000"),
        ("MASTER_PORT", "0"),
        ("MASTER_PORT", "65535"),
        ("HVQ_NCCL_PORT", "x"),
    ] {
        match World::parse(env(&torchrun_with(var, Some(value)))) {
            Err(TrainError::LaunchEnvGarbled { var: v, .. }) => {
                // MASTER_PORT=65535 leaves no room for the id port: that is MASTER_PORT's fault.
                assert_eq!(v, var, "{var}={value}")
            }
            other => panic!("{var}={value}: {other:?}"),
        }
    }
    for (var, value) in [("RANK", "4"), ("LOCAL_RANK", "9")] {
        match World::parse(env(&torchrun_with(var, Some(value)))) {
            Err(TrainError::LaunchEnvInconsistent {
                var: v, bound: 4, ..
            }) => assert_eq!(v, var),
            other => panic!("{var}={value}: {other:?}"),
        }
    }
    // A rank without a world size is a mistake, not a single process.
    assert!(matches!(
        World::parse(env(&[("RANK", "1")])),
        Err(TrainError::LaunchEnvInconsistent { var: "RANK", .. })
    ));
}

/// Runs `f(rank's group)` in one thread per rank and returns the results in rank order.
fn in_threads<T: Send>(world: usize, f: impl Fn(LocalGroup) -> T + Sync) -> Vec<T> {
    let groups = LocalGroup::new(world);
    std::thread::scope(|s| {
        let handles: Vec<_> = groups.into_iter().map(|g| s.spawn(|| f(g))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn local_group_sums_maxes_and_broadcasts_alike_on_every_rank() {
    single_thread();
    let out = in_threads(3, |g| {
        let r = g.rank() as f32;
        let mut sum = Tensor::from_slice(&[0.1f32 * (r + 1.0), -r, 1e8]);
        g.all_reduce_sum(&mut sum).unwrap();
        let mut max = Tensor::from_slice(&[g.rank() as i64, 7 - g.rank() as i64]).view([1, 2]);
        g.all_reduce_max(&mut max).unwrap();
        let mut b = Tensor::from_slice(&[r, r * 2.0]);
        g.broadcast(&mut b, 1).unwrap();
        let mismatch = Tensor::zeros([g.rank() as i64 + 1], (Kind::Float, Device::Cpu));
        let err = g.all_reduce_sum(&mut mismatch.shallow_clone()).unwrap_err();
        (sum, max, b, err)
    });
    // Summed in rank order: (0.1 + 0.2) + 0.3 in f32, on every rank.
    let expected = (0.1f32 + 0.2f32) + 0.3f32;
    for (sum, max, b, err) in &out {
        assert!(sum.equal(&out[0].0));
        assert_eq!(sum.double_value(&[0]) as f32, expected);
        assert_eq!(sum.double_value(&[1]), -3.0);
        assert_eq!(Vec::<i64>::try_from(max.reshape([-1])).unwrap(), [2, 7]);
        assert_eq!(max.size(), [1, 2]);
        assert_eq!(Vec::<f32>::try_from(b).unwrap(), [1.0, 2.0]);
        assert!(matches!(
            err,
            TrainError::CollectiveMismatch {
                rank: 1,
                got: 2,
                expected: 1,
                ..
            }
        ));
    }
    let batch = Tensor::arange(6, (Kind::Int64, Device::Cpu));
    assert_eq!(Vec::<i64>::try_from(shard(&batch, 1, 3)).unwrap(), [2, 3]);
}

fn params(t: &Trainer) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = t
        .varstore()
        .variables()
        .into_iter()
        .map(|(n, p)| (n, p.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// What a run leaves: parameters, then per-step (loss, restarted entries).
type Outcome = (Vec<(String, Tensor)>, Vec<(f64, usize)>);

fn train(t: &mut Trainer, steps: u64) -> Outcome {
    train_scaled(t, steps, 1.0)
}

/// Trains on the test batches times `scale`.
fn train_scaled(t: &mut Trainer, steps: u64, scale: f64) -> Outcome {
    let stats = (0..steps)
        .map(|s| {
            let st = t.train_step(&(batch_for(s) * scale)).unwrap();
            (st.loss, st.restarted)
        })
        .collect();
    (params(t), stats)
}

fn single(cfg: &TrainConfig, steps: u64) -> Outcome {
    train(&mut Trainer::new(cfg, Device::Cpu).unwrap(), steps)
}

/// One process on inputs moved by about one f32 rounding step: how far rounding alone
/// carries this configuration from `single`.
fn single_rounded_differently(cfg: &TrainConfig, steps: u64) -> Outcome {
    train_scaled(
        &mut Trainer::new(cfg, Device::Cpu).unwrap(),
        steps,
        1.0 + 2e-7,
    )
}

/// The largest relative difference of two runs' per-step losses.
fn loss_difference(a: &Outcome, b: &Outcome) -> f64 {
    a.1.iter()
        .zip(&b.1)
        .map(|((x, _), (y, _))| (x - y).abs() / y.abs())
        .fold(0.0, f64::max)
}

fn ranks(cfg: &TrainConfig, world: usize, steps: u64) -> Vec<Outcome> {
    in_threads(world, |g| {
        let group: Arc<dyn Collective> = Arc::new(g);
        train(
            &mut Trainer::with_group(cfg, Device::Cpu, Some(group)).unwrap(),
            steps,
        )
    })
}

/// Whether a variable's true gradient is zero: an attention key bias adds the same amount
/// to every logit of a query, which the softmax ignores, so its gradient is rounding noise
/// that Adam scales up to steps of the learning rate in either direction.
fn noise_only(name: &str) -> bool {
    name.contains("attn") && name.ends_with(".k.bias")
}

/// The largest element-wise difference of the variables `keep` selects, and its variable.
fn max_difference(
    a: &[(String, Tensor)],
    b: &[(String, Tensor)],
    keep: impl Fn(&str) -> bool,
) -> (f64, String) {
    a.iter()
        .zip(b)
        .filter(|((name, _), _)| keep(name))
        .map(|((name, x), (_, y))| ((x - y).abs().max().double_value(&[]), name.clone()))
        .fold(
            (0.0, String::new()),
            |acc, d| if d.0 > acc.0 { d } else { acc },
        )
}

const SWITCHES: [&str; 3] = [
    "",
    "[codebook]\nkmeans_init = true\nkmeans_step = 2\nlevel_quotas = true\nrestart_dead = true\nrestart_every = 2\nrestart_resets_optimizer = true\nlr_scale = 5.0",
    "[codebook]\nmode = \"ema\"\nema_level_weights = true\nrestart_dead = true\nrestart_every = 2\nlevel_quotas = true",
];

#[test]
fn two_ranks_agree_bit_for_bit_and_match_one_process_on_the_whole_batch() {
    single_thread();
    const STEPS: u64 = 6;
    for extra in SWITCHES {
        let cfg = config(extra);
        let reference = single(&cfg, STEPS);
        let out = ranks(&cfg, 2, STEPS);
        for ((name, a), (_, b)) in out[0].0.iter().zip(&out[1].0) {
            assert!(a.equal(b), "{name} differs between the ranks ({extra:?})");
        }
        assert_eq!(out[0].1, out[1].1);
        // Restarts pick the same rows of the global batch as the single process does.
        let restarts = |o: &Outcome| o.1.iter().map(|s| s.1).collect::<Vec<_>>();
        assert_eq!(restarts(&out[0]), restarts(&reference), "{extra:?}");
        if extra.contains("restart_dead") {
            assert!(
                restarts(&reference).iter().sum::<usize>() > 0,
                "no restart tested"
            );
        }
        // The mean of two half-batch means is the whole batch's mean up to f32 rounding
        // (about 1e-7 relative); Adam turns that into differences of about the same relative
        // size, except where the gradient is small against its rounding noise. Without
        // k-means and restarts together that stays below 1e-5 after six steps (1e-4 is a
        // tenth of one update at the peak learning rate). With both, a k-means entry that sits
        // on its only latent has a gradient of pure rounding noise, which Adam turns into
        // whole learning-rate steps: one process whose inputs move by one rounding step then
        // drifts just as far (measured: codebook 1.9e-2, loss 1.2e-4 relative), so the two
        // ranks are held to twice that drift, never less strictly than the 1e-5 and 1e-4.
        let rounded = single_rounded_differently(&cfg, STEPS);
        let loss_budget = (2.0 * loss_difference(&rounded, &reference)).max(1e-5);
        let loss = loss_difference(&out[0], &reference);
        assert!(
            loss <= loss_budget,
            "loss {loss:.3e} > {loss_budget:.3e} ({extra:?})"
        );
        let keep = |n: &str| !noise_only(n);
        let budget = (2.0 * max_difference(&rounded.0, &reference.0, keep).0).max(1e-4);
        let (diff, name) = max_difference(&out[0].0, &reference.0, keep);
        eprintln!(
            "{extra:?}: largest difference to one process {diff:.3e} ({name}), budget {budget:.3e}"
        );
        assert!(
            diff <= budget,
            "{name} differs from one process by {diff} > {budget} ({extra:?})"
        );
        // Variables trained on noise alone move at most one learning rate (≤ 1e-3) a step.
        let (diff, name) = max_difference(&out[0].0, &reference.0, noise_only);
        assert!(diff <= STEPS as f64 * 1e-3 * 1.01, "{name}: {diff}");
    }
}

#[test]
fn a_group_of_one_is_bit_identical_to_no_group() {
    single_thread();
    for extra in SWITCHES {
        let cfg = config(extra);
        let reference = single(&cfg, 5);
        let out = ranks(&cfg, 1, 5);
        assert_eq!(out[0].1, reference.1, "{extra:?}");
        for ((name, a), (_, b)) in out[0].0.iter().zip(&reference.0) {
            assert!(a.equal(b), "{name} differs ({extra:?})");
        }
    }
}

#[test]
fn a_global_batch_not_divisible_by_the_ranks_is_refused() {
    single_thread();
    let cfg = config("");
    let group: Arc<dyn Collective> = Arc::new(LocalGroup::new(3).remove(0));
    match Trainer::with_group(&cfg, Device::Cpu, Some(group)) {
        Err(TrainError::BadConfig { field, .. }) => assert_eq!(field, "schedule.batch"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a batch of 4 over 3 ranks was accepted"),
    }
}

fn single_thread() {
    tch::set_num_threads(1);
}

/// Where no NCCL library can be found (this machine), asking for it is a typed error, not a
/// crash; a single process without it needs no group at all.
#[test]
fn a_missing_nccl_is_a_clear_error() {
    use hvq_train::distributed::{World, connect};
    assert!(connect(&World::SINGLE, false).unwrap().is_none());
    if std::env::var_os("HVQ_EXPECT_NCCL").is_some() {
        return; // a GPU machine with NCCL: the GPU script checks that path instead
    }
    match connect(&World::SINGLE, true) {
        Err(e) => assert!(e.to_string().contains("libnccl"), "{e}"),
        Ok(_) => panic!("NCCL loaded on a machine without it"),
    }
}

#[test]
fn local_group_gathers_every_ranks_slice_in_rank_order() {
    single_thread();
    let out = in_threads(3, |g| {
        let r = g.rank() as f32;
        let local = Tensor::from_slice(&[r, r + 0.5, -0.0]).view([1, 3]);
        let all = g.all_gather(&local).unwrap();
        let wrong = Tensor::zeros([g.rank() as i64 + 1], (Kind::Float, Device::Cpu));
        (all, g.all_gather(&wrong).is_err())
    });
    let expected =
        Tensor::from_slice(&[0f32, 0.5, -0.0, 1.0, 1.5, -0.0, 2.0, 2.5, -0.0]).view([3, 3]);
    for (all, wrong) in &out {
        assert!(all.equal(&expected));
        // Copied, not summed: the sign of a negative zero survives.
        assert!(Vec::<f32>::try_from(all.reshape([-1])).unwrap()[2].is_sign_negative());
        assert!(wrong, "slices of different sizes were gathered");
    }
}

/// [`train`], each rank given only its slice of every global batch, as a sliced loader makes.
fn ranks_on_slices(cfg: &TrainConfig, world: usize, steps: u64) -> Vec<Outcome> {
    in_threads(world, |g| {
        let (rank, w) = (g.rank(), g.world_size());
        let group: Arc<dyn Collective> = Arc::new(g);
        let mut t = Trainer::with_group(cfg, Device::Cpu, Some(group)).unwrap();
        let stats = (0..steps)
            .map(|s| {
                let st = t.train_step(&shard(&batch_for(s), rank, w)).unwrap();
                (st.loss, st.restarted)
            })
            .collect();
        (params(&t), stats)
    })
}

#[test]
fn ranks_given_only_their_slices_train_bit_for_bit_as_ranks_given_the_whole_batch() {
    single_thread();
    const STEPS: u64 = 5;
    // The second switch set runs the k-means at step 2 inside `advance`, over the gathered
    // slices; the third restarts dead entries from the slices.
    for extra in SWITCHES {
        let cfg = config(extra);
        for world in [1, 2] {
            let whole = ranks(&cfg, world, STEPS);
            let sliced = ranks_on_slices(&cfg, world, STEPS);
            for (r, (a, b)) in whole.iter().zip(&sliced).enumerate() {
                assert_eq!(a.1, b.1, "rank {r} of {world}: losses ({extra:?})");
                for ((name, x), (_, y)) in a.0.iter().zip(&b.0) {
                    assert!(
                        x.equal(y),
                        "rank {r} of {world}: {name} differs ({extra:?})"
                    );
                }
            }
        }
    }
}

#[test]
fn the_k_means_over_gathered_slices_is_the_k_means_over_the_whole_batch() {
    single_thread();
    let cfg = config("[codebook]\nkmeans_init = true\nlevel_quotas = true");
    let codebook = |t: &Trainer| {
        let p = params(t);
        p.into_iter()
            .find(|(n, _)| n.contains("codebook"))
            .unwrap()
            .1
    };
    let mut one = Trainer::new(&cfg, Device::Cpu).unwrap();
    one.init_codebook(&batch_for(0)).unwrap();
    let reference = codebook(&one);
    let out = in_threads(2, |g| {
        let (rank, w) = (g.rank(), g.world_size());
        let group: Arc<dyn Collective> = Arc::new(g);
        let mut t = Trainer::with_group(&cfg, Device::Cpu, Some(group)).unwrap();
        t.init_codebook(&shard(&batch_for(0), rank, w)).unwrap();
        codebook(&t)
    });
    for cb in &out {
        assert!(
            cb.equal(&reference),
            "the gathered k-means differs from one process's"
        );
    }
}

#[test]
fn a_batch_that_is_neither_global_nor_a_slice_is_refused() {
    single_thread();
    let cfg = config("");
    let errors = in_threads(2, |g| {
        let group: Arc<dyn Collective> = Arc::new(g);
        let mut t = Trainer::with_group(&cfg, Device::Cpu, Some(group)).unwrap();
        t.train_step(&eight_images().narrow(0, 0, 3)).unwrap_err()
    });
    for e in errors {
        assert!(
            matches!(&e, TrainError::BadConfig { field, .. } if field == "schedule.batch"),
            "{e}"
        );
    }
}

/// Writes eight 24×20 noise PNGs into `dir`.
fn write_noise_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let px = Vec::<f32>::try_from(eight_images().reshape([-1])).unwrap();
    for i in 0..8u32 {
        let img = image::RgbImage::from_fn(24, 20, |x, y| {
            let at = |c: u32| px[((i * 3 + c) * 256 + (y % 16) * 16 + (x % 16)) as usize];
            image::Rgb([0, 1, 2].map(|c| (at(c) * 255.0) as u8))
        });
        img.save(dir.join(format!("n{i}.png"))).unwrap();
    }
}

fn run_cfg(dir: &Path, out: &str) -> TrainConfig {
    let text = format!(
        "preset = \"tiny\"\ndata_dir = \"{data}\"\nout_dir = \"{out}\"\nseed = 2\nlog_every = 1\ncheckpoint_every = 100\nval_every = 0\ndevice = \"cpu\"\n\
         [schedule]\nsteps = 3\nbatch = 4\nlr = 1e-3\nwarmup_steps = 1\n[codebook]\nkmeans_init = true\n\
         [data]\nimage_size = 16\nval_count = 0\nworkers = 1\nprefetch = 1\nmanifest_dir = \"{cache}\"\n[loss]\nperceptual = 0.0\n",
        data = dir.join("data").display(),
        out = dir.join(out).display(),
        cache = dir.join("cache").display(),
    );
    TrainConfig::parse(&text, Path::new("run.toml")).unwrap()
}

#[test]
fn a_run_of_two_ranks_loading_only_their_slices_trains_like_one_process() {
    single_thread();
    let dir = tempfile::tempdir().unwrap();
    write_noise_images(&dir.path().join("data"));
    let opts = RunOptions {
        resume: false,
        progress: false,
        command: "test".into(),
        stop_after: None,
        change_horizon: false,
    };
    let one = run(&run_cfg(dir.path(), "one"), Device::Cpu, &opts)
        .unwrap()
        .unwrap();
    let two = in_threads(2, |g| {
        let group: Arc<dyn Collective> = Arc::new(g);
        run_with_group(&run_cfg(dir.path(), "two"), Device::Cpu, &opts, Some(group))
            .unwrap()
            .unwrap()
    });
    assert_eq!(two[0].loss, two[1].loss);
    // As in the test above: half-batch means against whole-batch means, f32 rounding.
    assert!(
        (two[0].loss - one.loss).abs() <= 1e-5 * one.loss.abs(),
        "{} vs {}",
        two[0].loss,
        one.loss
    );
    let weights = |run: &str| {
        let mut v =
            Tensor::read_safetensors(dir.path().join(run).join("weights.safetensors")).unwrap();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (diff, name) = max_difference(&weights("one"), &weights("two"), |n| !noise_only(n));
    assert!(diff < 1e-4, "{name} differs from one process by {diff}");
}
