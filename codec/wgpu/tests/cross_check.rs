//! The cross-check harness: small random models (every level strategy, with and without
//! attention, one to three levels, odd grid sizes) run op by op on the CPU reference and on
//! wgpu. Every node of every program (the un-fused graph of `hvq_spec::graph`) gets the CPU's
//! values of its inputs on both backends, so each comparison measures one kernel alone; then
//! the whole fused programs are compared end to end.

mod common;

use common::{Rng, context, dist, report};
use hvq_cpu::CpuModel;
use hvq_spec::graph::{Data, ModelGraph, Op, Program, Value, ValueKind};
use hvq_spec::{FeatureMap, ModelConfig, Strategy, random_weights};
use hvq_wgpu::GpuModel;

/// The configurations the harness runs: every strategy crossed with a few shapes of model.
fn configs() -> Vec<ModelConfig> {
    let mut out = Vec::new();
    for strategy in Strategy::ALL {
        out.push(ModelConfig {
            strategy,
            ..ModelConfig::tiny()
        });
        out.push(ModelConfig {
            strategy,
            channel_mult: vec![1, 2, 1],
            mid_attention: false,
            decoder_res_blocks: 2,
            levels: 2,
            ..ModelConfig::tiny()
        });
    }
    out.push(ModelConfig {
        levels: 1,
        ..ModelConfig::tiny()
    });
    out
}

/// Largest difference relative to the values' scale (at least 1).
fn rel_diff(a: &FeatureMap, b: &FeatureMap) -> f32 {
    assert_eq!(
        (a.channels, a.height, a.width),
        (b.channels, b.height, b.width)
    );
    let scale = a.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .data
        .iter()
        .zip(&b.data)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Every node's value on the CPU, from the program's input.
fn cpu_values(cpu: &CpuModel, p: &Program, input: Data) -> Vec<Option<Data>> {
    let all: Vec<Value> = (0..p.nodes.len())
        .filter(|&i| Value(i) != p.input)
        .map(Value)
        .collect();
    let got = cpu.run(p, vec![(p.input, input.clone())], &all).unwrap();
    let mut values = vec![None; p.nodes.len()];
    values[p.input.0] = Some(input);
    for (v, d) in all.iter().zip(got) {
        values[v.0] = Some(d);
    }
    values
}

/// Checks every node of `p` on wgpu against the CPU, each given the CPU's inputs. Returns the
/// nodes checked and the worst relative difference.
fn check_nodes(
    cpu: &CpuModel,
    gpu: &GpuModel,
    p: &Program,
    values: &[Option<Data>],
    what: &str,
) -> (usize, f32) {
    let mut worst = 0.0f32;
    let mut checked = 0;
    for (i, node) in p.nodes.iter().enumerate() {
        if node.op == Op::Input {
            continue;
        }
        let given: Vec<(Value, Data)> = node
            .inputs
            .iter()
            .map(|&v| (v, values[v.0].clone().unwrap()))
            .collect();
        let got = pollster::block_on(gpu.run(p, &given, &[Value(i)])).unwrap();
        let want = values[i].as_ref().unwrap();
        match (&got[0], want) {
            (Data::Map(g), Data::Map(w)) => {
                let d = rel_diff(g, w);
                assert!(d < 1e-4, "{what} node {i} {:?}: relative diff {d}", node.op);
                worst = worst.max(d);
            }
            (Data::Tokens(g), Data::Tokens(w)) => {
                let Some(Data::Map(latent)) = &values[node.inputs[0].0] else {
                    panic!("tokens come from a latent")
                };
                let codebook = &cpu.weights().tensor("quantizer.codebook").data;
                for (k, (&a, &b)) in g.tokens.iter().zip(&w.tokens).enumerate() {
                    if a != b {
                        let (da, db) = (dist(latent, codebook, k, a), dist(latent, codebook, k, b));
                        let tie = (da - db).abs() <= 1e-4 * da.abs().max(db.abs()).max(1.0);
                        assert!(
                            tie,
                            "{what} node {i}: token {k} is {a} vs {b} ({da} vs {db})"
                        );
                    }
                }
            }
            _ => panic!("{what} node {i}: kinds differ"),
        }
        assert_eq!(
            node.kind == ValueKind::Tokens,
            matches!(want, Data::Tokens(_))
        );
        checked += 1;
    }
    (checked, worst)
}

#[test]
fn every_op_of_every_program_agrees_with_the_cpu() {
    let Some(ctx) = context() else { return };
    let (mut nodes, mut worst) = (0, 0.0f32);
    for (n, cfg) in configs().into_iter().enumerate() {
        let weights = random_weights(&cfg, 100 + n as u64).unwrap();
        let cpu = CpuModel::new(weights.clone());
        let gpu = GpuModel::new(&ctx, &weights).unwrap();
        let graph = ModelGraph::new(&cfg);
        // Odd token grids at the coarsest level: 3×5 (24×40 pixels at stride 8).
        let s = cfg.coarsest_stride();
        let image = Rng::new(n as u64).map(3, 3 * s, 5 * s);
        let image = FeatureMap {
            data: image.data.iter().map(|v| 0.5 + 0.5 * v).collect(),
            ..image
        };
        let what = format!(
            "{:?}/{}-level/{}",
            cfg.strategy, cfg.levels, cfg.mid_attention
        );
        let enc = cpu_values(&cpu, &graph.encoder, Data::Map(image));
        let (k, w) = check_nodes(&cpu, &gpu, &graph.encoder, &enc, &format!("{what} encoder"));
        (nodes, worst) = (nodes + k, worst.max(w));
        for (level, d) in graph.decoders.iter().enumerate() {
            let tokens = graph
                .encoder
                .output(hvq_spec::graph::Output::Tokens(level))
                .unwrap();
            let Some(Data::Tokens(grid)) = enc[tokens.0].clone() else {
                panic!("tokens")
            };
            let dec = cpu_values(&cpu, d, Data::Tokens(grid));
            let (k, w) = check_nodes(&cpu, &gpu, d, &dec, &format!("{what} decoder {level}"));
            (nodes, worst) = (nodes + k, worst.max(w));
        }
    }
    report(&format!(
        "cross-check: {nodes} nodes of {} models, worst relative difference {worst:.2e}",
        configs().len()
    ));
}
