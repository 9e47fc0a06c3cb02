//! Decides whether the default model is embedded.
//!
//! The trained default weights are copied to `models/default.safetensors` after training; until then the
//! workspace must still build. With the `default-model` feature on and the file present, this sets the cfg
//! `hvq_embedded_model`, and `src/default_model.rs` embeds the file with `include_bytes!`; otherwise
//! `Codec::default_model()` compiles to an error saying no model is embedded.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hvq_embedded_model)");
    // Watching the folder (not the file) reruns this script when the file appears, without rerunning
    // it on every build while the file is absent.
    println!("cargo::rerun-if-changed=models");
    let wanted = std::env::var_os("CARGO_FEATURE_DEFAULT_MODEL").is_some();
    let present = Path::new("models/default.safetensors").is_file();
    if wanted && present {
        println!("cargo::rustc-cfg=hvq_embedded_model");
    }
}
