//! Model structure and gradient-flow tests on tiny configs (CPU, deterministic).

use std::collections::BTreeSet;

use hvq_spec::graph::{Output, Program, Value};
use hvq_spec::{ModelConfig, Strategy, schema};
use hvq_train::model::Hvq;
use tch::{Device, Kind, Tensor, nn};

fn tiny(strategy: Strategy, levels: usize) -> ModelConfig {
    ModelConfig {
        strategy,
        levels,
        ..ModelConfig::tiny()
    }
}

fn all_configs() -> Vec<ModelConfig> {
    let mut v = Vec::new();
    for s in Strategy::ALL {
        for levels in 1..=3 {
            v.push(tiny(s, levels));
        }
    }
    // Attention off and 3 encoder resolutions, to cover the other schema branches.
    v.push(ModelConfig {
        mid_attention: false,
        channel_mult: vec![1, 2, 2],
        ..ModelConfig::tiny()
    });
    v
}

fn build(cfg: &ModelConfig) -> (nn::VarStore, Hvq) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Hvq::new(&vs.root(), cfg);
    (vs, m)
}

fn input(cfg: &ModelConfig, b: i64, side_mult: i64) -> Tensor {
    tch::manual_seed(1);
    let s = cfg.coarsest_stride() as i64 * side_mult;
    Tensor::rand(
        [b, 3, s, s + cfg.coarsest_stride() as i64],
        (Kind::Float, Device::Cpu),
    )
}

#[test]
fn variable_names_and_shapes_equal_the_schema() {
    single_thread();
    for cfg in all_configs() {
        let (vs, _) = build(&cfg);
        let ours: BTreeSet<(String, Vec<usize>)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size().iter().map(|&d| d as usize).collect()))
            .collect();
        let schema: BTreeSet<(String, Vec<usize>)> = schema::tensors(&cfg)
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        assert_eq!(ours, schema, "config {cfg:?}");
    }
}

#[test]
fn output_shapes_at_every_level_for_every_strategy() {
    single_thread();
    for cfg in all_configs() {
        let (_vs, m) = build(&cfg);
        let x = input(&cfg, 2, 2);
        let (_, _, h, w) = x.size4().unwrap();
        let outs = tch::no_grad(|| m.forward(&m.normalize(&x)));
        assert_eq!(outs.len(), cfg.levels);
        for (l, o) in outs.iter().enumerate() {
            let f = cfg.level_stride(l) as i64;
            let d = cfg.codebook_dim as i64;
            assert_eq!(
                o.latent.size(),
                [2, d, h / f, w / f],
                "latent, level {l}, {cfg:?}"
            );
            assert_eq!(o.quantized.size(), [2, d, h / f, w / f]);
            assert_eq!(o.tokens.size(), [2, h / f, w / f]);
            assert_eq!(o.tokens.kind(), Kind::Int64);
            assert_eq!(o.recon.size(), [2, 3, h, w], "recon, level {l}");
            let max = o.tokens.max().int64_value(&[]);
            assert!(max < cfg.codebook_size as i64 && o.tokens.min().int64_value(&[]) >= 0);
        }
    }
}

#[test]
fn tokens_are_the_nearest_entry_with_ties_to_the_lowest_index() {
    single_thread();
    let cfg = ModelConfig::tiny();
    let (_vs, m) = build(&cfg);
    let cb = m.codebook().detach();
    // Latent equal to entry 5 → token 5; equidistant between duplicated entries → lowest.
    tch::no_grad(|| m.codebook().shallow_clone().get(9).copy_(&cb.get(5)));
    let p = m.codebook().detach().get(5).view([1, 4, 1, 1]);
    assert_eq!(m.nearest(&p).int64_value(&[0, 0, 0]), 5);
}

#[test]
fn whole_programs_equal_the_step_by_step_api() {
    single_thread();
    for cfg in all_configs() {
        let (_vs, m) = build(&cfg);
        let x = input(&cfg, 2, 1);
        let e = &m.graph().encoder;
        let out = |p: &Program, o| p.output(o).unwrap();
        tch::no_grad(|| {
            // Image → tokens of every level, Input to NearestCode in one run.
            let wanted: Vec<Value> = (0..cfg.levels).map(|l| out(e, Output::Tokens(l))).collect();
            let tokens = m.run(e, vec![(e.input, x.shallow_clone())], &wanted);
            let zs = m.level_latents(&m.normalize(&x));
            for (l, z) in zs.iter().enumerate() {
                let expected = m.nearest(&m.project(z));
                assert!(tokens[l].equal(&expected), "tokens of level {l}, {cfg:?}");
                // Tokens → image, GatherCode to Denormalize in one run.
                let d = &m.graph().decoders[l];
                let image = m.run(
                    d,
                    vec![(d.input, tokens[l].shallow_clone())],
                    &[out(d, Output::Image)],
                );
                let expected = m.denormalize(&m.decode(l, &m.lookup(&expected)));
                assert!(image[0].equal(&expected), "image of level {l}, {cfg:?}");
            }
        });
    }
}

fn grad_norm(vs: &nn::VarStore, name: &str) -> f64 {
    let t = &vs.variables()[name];
    let g = t.grad();
    if g.defined() {
        g.abs().sum(Kind::Double).double_value(&[])
    } else {
        0.0
    }
}

#[test]
fn straight_through_gradient_reaches_the_encoder() {
    single_thread();
    let cfg = ModelConfig::tiny();
    let (vs, m) = build(&cfg);
    let x = m.normalize(&input(&cfg, 1, 1));
    let outs = m.forward(&x);
    // Reconstruction loss of the coarsest level only: its gradient must pass the quantizer.
    (&outs[2].recon - &x).abs().mean(Kind::Float).backward();
    for name in [
        "encoder.conv_in.weight",
        "levels.2.down.conv.weight",
        "quantizer.proj.weight",
    ] {
        assert!(grad_norm(&vs, name) > 0.0, "{name} got no gradient");
    }
    assert_eq!(
        grad_norm(&vs, "quantizer.codebook"),
        0.0,
        "the reconstruction must not move the codebook"
    );
}

#[test]
fn codebook_term_moves_only_the_codebook_and_commitment_only_the_encoder_side() {
    single_thread();
    let cfg = ModelConfig::tiny();
    let (vs, m) = build(&cfg);
    let x = m.normalize(&input(&cfg, 1, 1));
    let outs = m.forward(&x);
    outs.iter()
        .map(|o| o.codebook_loss.shallow_clone())
        .sum::<Tensor>()
        .backward();
    for (name, _) in vs.variables() {
        let g = grad_norm(&vs, &name);
        if name == "quantizer.codebook" {
            assert!(g > 0.0, "codebook got no gradient");
        } else {
            assert_eq!(g, 0.0, "{name} moved by the codebook term");
        }
    }
    for (_, mut t) in vs.variables() {
        t.zero_grad();
    }
    let outs = m.forward(&x);
    outs.iter()
        .map(|o| o.commitment_loss.shallow_clone())
        .sum::<Tensor>()
        .backward();
    assert_eq!(
        grad_norm(&vs, "quantizer.codebook"),
        0.0,
        "commitment moved the codebook"
    );
    assert!(
        grad_norm(&vs, "encoder.conv_in.weight") > 0.0
            && grad_norm(&vs, "quantizer.proj.weight") > 0.0
    );
    for (name, _) in vs.variables() {
        if name.starts_with("decoders.") {
            assert_eq!(
                grad_norm(&vs, &name),
                0.0,
                "{name} moved by the commitment term"
            );
        }
    }
}

/// libtorch's intra-op threads spin-wait; on a shared 2-core machine that makes tiny
/// models 10-20x slower than one thread, so tests use one.
fn single_thread() {
    tch::set_num_threads(1);
}

/// The tch interpreter and the CPU backend run the same programs: for every strategy (the
/// paper's four and `sampleconv`, which exists only as an arm in `hvq_spec::graph`) the
/// latents, tokens and decoded pixels of random weights agree.
#[test]
fn libtorch_and_the_cpu_backend_agree_for_every_strategy() {
    single_thread();
    for s in Strategy::ALL {
        let cfg = tiny(s, 3);
        let weights = hvq_spec::random_weights(&cfg, 5).unwrap();
        let (_vs, m) = hvq_train::eval::load_model(&weights, Device::Cpu).unwrap();
        let cpu = hvq_cpu::CpuModel::new(weights);
        let x = input(&cfg, 1, 3);
        let (_, _, h, w) = x.size4().unwrap();
        let image = hvq_spec::FeatureMap {
            channels: 3,
            height: h as usize,
            width: w as usize,
            data: Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(),
        };
        let want = cpu.encode_latents(&image).unwrap();
        let grids = cpu.encode(&image, &[0, 1, 2]).unwrap();
        let zs = tch::no_grad(|| m.level_latents(&m.normalize(&x)));
        for (l, z) in zs.iter().enumerate() {
            let p = tch::no_grad(|| m.project(z));
            let got = Vec::<f32>::try_from(p.flatten(0, -1)).unwrap();
            assert_eq!(
                got.len(),
                want[l].data.len(),
                "{s:?} level {l}: latent size"
            );
            let diff = got
                .iter()
                .zip(&want[l].data)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(diff < 1e-4, "{s:?} level {l}: latent differs by {diff}");
            let tokens = Tensor::from_slice(
                &grids[l]
                    .tokens
                    .iter()
                    .map(|&t| t as i64)
                    .collect::<Vec<_>>(),
            )
            .view([1, grids[l].height as i64, grids[l].width as i64]);
            let rgb = tch::no_grad(|| m.denormalize(&m.decode(l, &m.lookup(&tokens))));
            let got = Vec::<f32>::try_from(rgb.flatten(0, -1)).unwrap();
            let cpu_rgb = cpu.decode(&grids[l]).unwrap();
            assert_eq!(got.len(), cpu_rgb.data.len(), "{s:?} level {l}: image size");
            let diff = got
                .iter()
                .zip(&cpu_rgb.data)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(diff < 1e-4, "{s:?} level {l}: pixels differ by {diff}");
        }
    }
}
