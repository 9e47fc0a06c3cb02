//! A seed's initial weights are pinned: building a model creates and initialises its
//! variables in a fixed order, so `tch::manual_seed(s)` then [`Hvq::new`] gives the same
//! weights, bit for bit, as the hand-written model did before the architecture moved into
//! `hvq_spec::graph` (issue 11).
//!
//! The digests below were recorded with that pre-graph code (`train/src/model.rs` at commit
//! b17ca70, whose `Encoder::new` created the encoder's stages before `encoder.conv_in`); the
//! graph-driven model must reproduce them exactly. They depend on libtorch's CPU RNG and
//! initialisers, so a libtorch upgrade may change them (re-record them then, with a note).
//!
//! Its own test binary: libtorch's RNG is global, and other tests draw from it concurrently.

use hvq_spec::{ModelConfig, Strategy, schema};
use hvq_train::model::Hvq;
use tch::{Device, Kind, nn};

/// FNV-1a over bytes.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Digest of every variable's name and f32 bits, in schema order.
fn digest(cfg: &ModelConfig, seed: i64) -> u64 {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Hvq::new(&vs.root(), cfg);
    let vars = vs.variables();
    let mut h = 0xcbf2_9ce4_8422_2325;
    for spec in schema::tensors(cfg) {
        let t = vars[&spec.name].to_kind(Kind::Float).flatten(0, -1);
        let values = Vec::<f32>::try_from(&t).expect("f32 variable");
        h = fnv(h, spec.name.as_bytes());
        for v in values {
            h = fnv(h, &v.to_bits().to_le_bytes());
        }
    }
    h
}

#[test]
fn a_seed_gives_the_initial_weights_of_the_pre_graph_model() {
    tch::set_num_threads(1);
    let cases = [
        ("tiny", ModelConfig::tiny(), 0),
        (
            "tiny-convpool-2",
            ModelConfig {
                strategy: Strategy::Convpool,
                levels: 2,
                ..ModelConfig::tiny()
            },
            7,
        ),
        (
            "tiny-no-attention-3-mults",
            ModelConfig {
                mid_attention: false,
                channel_mult: vec![1, 2, 2],
                strategy: Strategy::Sampling,
                ..ModelConfig::tiny()
            },
            11,
        ),
        ("small", ModelConfig::small(), 1234),
    ];
    let expected: [u64; 4] = [
        0x2408_dc63_23f0_ffeb,
        0x748a_b9f2_f6aa_e673,
        0xc09a_fd56_564a_1e20,
        0xc7b8_464e_b518_966b,
    ];
    let got: Vec<u64> = cases
        .iter()
        .map(|(_, cfg, seed)| digest(cfg, *seed))
        .collect();
    for ((name, ..), g) in cases.iter().zip(&got) {
        println!("{name}: {g:#018x}");
    }
    assert_eq!(
        got, expected,
        "initial weights changed (digests in case order)"
    );
}
