//! The native side of `web/bench.mjs`: times encode and decode of one image with `hvq-codec` on the
//! wgpu backend (lavapipe on a machine without a GPU) and on the CPU backend, the same way
//! `web/bench.js` times them in the browser, and prints one JSON object per backend.
//!
//! ```sh
//! cargo run --release -p hvq-wasm --example native_bench -- web/model.safetensors web/sample.png 5 [CPU_REPS]
//! ```
//! `REPS` timed repetitions after the first call on wgpu (0: the first call only, for models
//! that take minutes on a software adapter), `CPU_REPS` on the CPU backend (default: `REPS`).
//! `HVQ_BENCH_BACKENDS=cpu` (or `wgpu`) times one backend only.
use std::process::ExitCode;
use std::time::Instant;

use hvq_codec::{Backend, Codec, LevelSelection, RgbImage};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The median as JSON: `null` when nothing was timed (0 repetitions).
fn median(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2)
        .map_or("null".into(), |m| format!("{m:.1}"))
}

fn bench(
    weights: &[u8],
    image: &RgbImage,
    backend: Backend,
    reps: usize,
) -> Result<String, hvq_codec::CodecError> {
    let t = Instant::now();
    let codec = Codec::from_weight_bytes(weights)?
        .backend(backend)
        .build()?;
    let create = ms(t);
    // The first call compiles pipelines and allocates buffers: timed apart, not in the medians.
    let t = Instant::now();
    let hvq = codec.encode_to_hvq(image, LevelSelection::All)?;
    let first_encode = ms(t);
    let levels: Vec<usize> = codec.info(&hvq)?.levels.iter().map(|l| l.level).collect();
    let mut first_decode = Vec::new();
    for &l in &levels {
        let t = Instant::now();
        codec.decode_hvq(&hvq, Some(l))?;
        first_decode.push(format!("\"{l}\": {:.1}", ms(t)));
    }
    let mut enc = Vec::new();
    let mut dec = vec![Vec::new(); levels.len()];
    for _ in 0..reps {
        let t = Instant::now();
        codec.encode_to_hvq(image, LevelSelection::All)?;
        enc.push(ms(t));
        for (i, &l) in levels.iter().enumerate() {
            let t = Instant::now();
            codec.decode_hvq(&hvq, Some(l))?;
            dec[i].push(ms(t));
        }
    }
    let decode: Vec<String> = levels
        .iter()
        .zip(dec)
        .map(|(l, d)| format!("\"{l}\": {}", median(d)))
        .collect();
    Ok(format!(
        "{{\"backend\": \"{}\", \"width\": {}, \"height\": {}, \"reps\": {reps}, \"createMs\": {create:.1}, \
         \"firstEncodeMs\": {first_encode:.1}, \"firstDecodeMs\": {{{}}}, \"encodeMs\": {}, \"decodeMs\": {{{}}}}}",
        codec.backend(),
        image.width(),
        image.height(),
        first_decode.join(", "),
        median(enc),
        decode.join(", ")
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, image, reps, cpu_reps) = match args.as_slice() {
        [m, i, r] => (m, i, r, r),
        [m, i, r, c] => (m, i, r, c),
        _ => {
            eprintln!("usage: native_bench MODEL.safetensors IMAGE REPS [CPU_REPS]");
            return ExitCode::from(2);
        }
    };
    let (Ok(weights), Ok(bytes), Ok(reps), Ok(cpu_reps)) = (
        std::fs::read(model),
        std::fs::read(image),
        reps.parse::<usize>(),
        cpu_reps.parse::<usize>(),
    ) else {
        eprintln!("native_bench: cannot read {model} or {image}, or a REPS is not a number");
        return ExitCode::FAILURE;
    };
    let image = match RgbImage::decode(&bytes, &Default::default()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("native_bench: {image}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut status = ExitCode::SUCCESS;
    let wanted = std::env::var("HVQ_BENCH_BACKENDS").unwrap_or_else(|_| "wgpu,cpu".into());
    let chosen = [
        ("wgpu", Backend::Wgpu, reps),
        ("cpu", Backend::Cpu, cpu_reps),
    ]
    .into_iter()
    .filter(|(name, _, _)| wanted.split(',').any(|w| w.trim() == *name));
    for (_, backend, reps) in chosen {
        match bench(&weights, &image, backend, reps) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("native_bench: {backend:?}: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
