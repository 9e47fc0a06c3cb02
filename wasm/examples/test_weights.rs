//! Writes deterministic random weights for a preset, for the browser end-to-end test and benchmark
//! when no trained model exists (`scripts/web-test.sh` calls it):
//!
//! ```sh
//! cargo run --release -p hvq-wasm --example test_weights -- small 1 web/model.safetensors
//! ```
//!
//! Random weights reconstruct nothing recognisable, but they exercise every kernel and every token
//! path exactly like trained ones, which is what the agreement test needs.
use std::process::ExitCode;

use hvq_spec::{ModelConfig, StoreDtype, random_weights};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [preset, seed, out] = args.as_slice() else {
        eprintln!("usage: test_weights PRESET SEED OUT.safetensors   (PRESET: tiny, small, paper)");
        return ExitCode::from(2);
    };
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let cfg = ModelConfig::preset(preset)?;
        let weights = random_weights(&cfg, seed.parse()?)?;
        std::fs::write(out, weights.to_safetensors(StoreDtype::F32))?;
        eprintln!("wrote {out}: random `{preset}` weights, seed {seed}");
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test_weights: {e}");
            ExitCode::FAILURE
        }
    }
}
