//! Export round trips and the committed conformance vectors.

use std::path::PathBuf;

use hvq_spec::{ModelConfig, StoreDtype, Weights};
use hvq_train::export::{Provenance, load_into_varstore, weights_from_varstore};
use hvq_train::model::Hvq;
use hvq_train::vectors::{
    generate_image, model_from_weights, run_image, vector_models, vector_weights,
};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor, nn};

fn forward_all(m: &Hvq, x: &Tensor) -> Vec<Tensor> {
    tch::no_grad(|| {
        m.forward(&m.normalize(x))
            .into_iter()
            .flat_map(|o| [o.latent, o.tokens.to_kind(Kind::Float), o.recon])
            .collect()
    })
}

#[test]
fn export_reload_gives_identical_outputs() {
    single_thread();
    let cfg = ModelConfig::tiny();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Hvq::new(&vs.root(), &cfg);
    let prov = Provenance {
        trained_steps: 7,
        data: "test".into(),
        command: "test".into(),
    };
    let w = weights_from_varstore(&vs, &cfg, prov.metadata()).unwrap();
    let bytes = w.to_safetensors(StoreDtype::F32);
    let back = Weights::from_safetensors(&bytes, &Default::default()).unwrap();
    assert_eq!(back.metadata()[hvq_spec::meta::TRAINED_STEPS], "7");
    assert!(back.metadata().contains_key(hvq_spec::meta::SOURCE_COMMIT));
    tch::manual_seed(99);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let m2 = Hvq::new(&vs2.root(), &cfg);
    load_into_varstore(&vs2, &back).unwrap();
    let x = Tensor::rand([1, 3, 16, 24], (Kind::Float, Device::Cpu));
    for (a, b) in forward_all(&m, &x).iter().zip(forward_all(&m2, &x)) {
        assert!(a.equal(&b), "f32 round trip must be bit-exact");
    }
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_vectors_match_a_fresh_libtorch_run() {
    single_thread();
    for vm in vector_models() {
        let committed = Weights::from_safetensors(
            &read(&vectors_dir().join(format!("{}.safetensors", vm.name))),
            &Default::default(),
        )
        .unwrap();
        let fresh = vector_weights(&vm, "test").unwrap();
        assert_eq!(
            committed.fingerprint(),
            fresh.fingerprint(),
            "weights of {} changed: regenerate the vectors",
            vm.name
        );
        let (_vs, model) = model_from_weights(&committed).unwrap();
        for img in &vm.images {
            let bytes = read(&vectors_dir().join(format!("{}.{}.safetensors", vm.name, img.name)));
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let pixels = generate_image(*img);
            assert_eq!(st.tensor("input").unwrap().data(), pixels.as_slice());
            let out = run_image(&model, &pixels, img.width, img.height);
            for l in 0..vm.config.levels {
                let toks: Vec<i32> = st
                    .tensor(&format!("tokens.{l}"))
                    .unwrap()
                    .data()
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let ours = Vec::<i64>::try_from(&out.tokens[l].reshape([-1])).unwrap();
                assert_eq!(toks.len(), ours.len());
                let same = toks
                    .iter()
                    .zip(&ours)
                    .filter(|(a, b)| **a as i64 == **b)
                    .count();
                // Same code, same library: every token must agree.
                assert_eq!(same, ours.len(), "{} {} level {l}", vm.name, img.name);
                let distinct: std::collections::BTreeSet<i32> = toks.iter().copied().collect();
                assert!(
                    distinct.len() > 1,
                    "vectors should exercise several codebook entries"
                );
                let dec: Vec<f32> = st
                    .tensor(&format!("decoded.{l}"))
                    .unwrap()
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let ours = Vec::<f32>::try_from(&out.decoded[l].reshape([-1])).unwrap();
                let max = dec
                    .iter()
                    .zip(&ours)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // Same kernels on the same machine kind: differences are float-order noise only.
                assert!(
                    max < 1e-5,
                    "{} {} level {l}: decoded differs by {max}",
                    vm.name,
                    img.name
                );
            }
        }
    }
}

/// libtorch's intra-op threads spin-wait; on a shared 2-core machine that makes tiny
/// models 10-20x slower than one thread, so tests use one.
fn single_thread() {
    tch::set_num_threads(1);
}
