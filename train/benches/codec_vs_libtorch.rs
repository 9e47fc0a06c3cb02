//! The CPU backend (`hvq-cpu`) against libtorch on the same weights, image and thread
//! count, in one process (issue 3's target: hvq-cpu no slower than libtorch CPU).
//!
//! Not a test: it prints medians and ratios and asserts nothing but that both sides agree on
//! the tokens (a benchmark of two different computations would be meaningless).
//!
//! ```text
//! . scripts/env.sh
//! HVQ_BENCH_THREADS=2 cargo bench -p hvq-train --bench codec_vs_libtorch [-- FILTER]
//! ```
//!
//! - `HVQ_BENCH_THREADS`: threads for both sides (libtorch intra-op threads and the rayon pool
//!   hvq-cpu runs in); default: all cores.
//! - `HVQ_BENCH_WEIGHTS`: a `.safetensors` file to time at each size instead of random weights of
//!   each preset (cases are then named after the file).
//! - `HVQ_BENCH_JSON`: also write the results to this file as JSON (relative to the repository root).
//! - `FILTER` keeps cases whose name (`small 768x512`) contains it.
//!
//! Each side is timed in turn on the same input, median of N runs after one warm-up. CPU time
//! (all threads of the process) is printed beside wall time: on a shared machine it shows
//! whether a side lost wall time to other processes.

// The same timing helpers as hvq-cpu's own benchmarks.
#[path = "../../codec/cpu/benches/common/mod.rs"]
mod timing;

use hvq_cpu::CpuModel;
use hvq_spec::{FeatureMap, ModelConfig, TokenGrid, WeightLimits, Weights, random_weights};
use hvq_train::eval::load_model;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// One preset at one image size, timed `runs` times per side after one warm-up.
struct Case {
    preset: String,
    width: usize,
    height: usize,
    runs: usize,
}

/// (preset, width, height, runs): 256² and Kodak's 768×512 for each preset.
const CASES: [(&str, usize, usize, usize); 4] = [
    ("small", 256, 256, 5),
    ("small", 768, 512, 3),
    ("paper", 256, 256, 3),
    ("paper", 768, 512, 1),
];

/// Wall and CPU milliseconds of one measured operation.
#[derive(Debug, Clone, Copy, Serialize)]
struct Timing {
    wall_ms: f64,
    cpu_ms: f64,
}

/// One row of the result: an operation timed on both sides.
#[derive(Debug, Serialize)]
struct Row {
    case: String,
    op: String,
    hvq_cpu: Timing,
    libtorch: Timing,
    /// hvq-cpu wall time / libtorch wall time: below 1 means hvq-cpu is faster.
    ratio: f64,
}

/// Median wall and CPU time over `runs` runs after one warm-up.
fn measure(runs: usize, f: impl FnMut()) -> Timing {
    let (wall_ms, cpu_ms) = timing::median_ms(runs, f);
    Timing { wall_ms, cpu_ms }
}

/// A deterministic, textured RGB image in [0, 1] (planar), the same for both sides.
fn test_image(width: usize, height: usize) -> FeatureMap {
    let data = (0..3 * height * width)
        .map(|i| ((i * 7919) % 1000) as f32 / 999.0)
        .collect();
    FeatureMap {
        channels: 3,
        height,
        width,
        data,
    }
}

/// Times one case on both sides and checks that their tokens agree.
fn run_case(case: &Case, weights: &Weights, pool: &rayon::ThreadPool) -> Vec<Row> {
    let name = format!("{} {}x{}", case.preset, case.width, case.height);
    let image = test_image(case.width, case.height);
    let levels: Vec<usize> = (0..weights.config().levels).collect();

    let hvq = CpuModel::new(weights.clone());
    let (_vs, torch) = load_model(weights, Device::Cpu).expect("libtorch loads the weights");
    let x = Tensor::from_slice(&image.data).view([1, 3, case.height as i64, case.width as i64]);

    let mut grids: Vec<TokenGrid> = Vec::new();
    let hvq_encode = pool.install(|| {
        measure(case.runs, || {
            grids = hvq.encode(&image, &levels).expect("hvq-cpu encode")
        })
    });
    let mut torch_tokens: Vec<Tensor> = Vec::new();
    let torch_encode = measure(case.runs, || {
        torch_tokens = tch::no_grad(|| torch.encode_tokens(&x))
    });
    report_agreement(&name, &grids, &torch_tokens);

    let mut rows = vec![row(&name, "encode, all levels", hvq_encode, torch_encode)];
    for (grid, tokens) in grids.iter().zip(&torch_tokens) {
        let hvq_decode = pool.install(|| {
            measure(case.runs, || {
                hvq.decode(grid).expect("hvq-cpu decode");
            })
        });
        let torch_decode = measure(case.runs, || {
            let _ = tch::no_grad(|| torch.decode_tokens(grid.level, tokens));
        });
        let op = format!("decode L{} ({}x{})", grid.level, grid.width, grid.height);
        rows.push(row(&name, &op, hvq_decode, torch_decode));
    }
    rows
}

fn row(case: &str, op: &str, hvq_cpu: Timing, libtorch: Timing) -> Row {
    let r = Row {
        case: case.into(),
        op: op.into(),
        hvq_cpu,
        libtorch,
        ratio: hvq_cpu.wall_ms / libtorch.wall_ms,
    };
    println!(
        "| {} | {} | {:.1} ({:.0}) | {:.1} ({:.0}) | {:.2} |",
        r.case, r.op, hvq_cpu.wall_ms, hvq_cpu.cpu_ms, libtorch.wall_ms, libtorch.cpu_ms, r.ratio
    );
    r
}

/// Prints how many tokens the two sides agree on; they must (up to near-ties) for the
/// timings to compare the same computation.
fn report_agreement(name: &str, grids: &[TokenGrid], torch_tokens: &[Tensor]) {
    for (g, t) in grids.iter().zip(torch_tokens) {
        let theirs: Vec<i64> =
            Vec::try_from(t.to_kind(Kind::Int64).reshape([-1])).expect("libtorch tokens to Vec");
        let same = g
            .tokens
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| i64::from(**a) == **b)
            .count();
        eprintln!(
            "{name} L{}: tokens agree {same}/{} ({:.2}%)",
            g.level,
            theirs.len(),
            100.0 * same as f64 / theirs.len().max(1) as f64
        );
        assert!(
            same * 100 >= theirs.len() * 99,
            "hvq-cpu and libtorch disagree on more than 1% of the tokens: not the same computation"
        );
    }
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let threads = std::env::var("HVQ_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tch::set_num_threads(threads as i32);
    tch::set_num_interop_threads(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool");
    let given_path = std::env::var("HVQ_BENCH_WEIGHTS").ok();
    let given = given_path.as_ref().map(|p| {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        Weights::from_safetensors(&bytes, &WeightLimits::default())
            .unwrap_or_else(|e| panic!("{p}: {e}"))
    });
    let given_name = given_path.as_ref().map(|p| {
        std::path::Path::new(p)
            .file_stem()
            .map_or("weights".into(), |s| s.to_string_lossy().into_owned())
    });

    println!(
        "hvq-cpu vs libtorch {} (CPU), {threads} thread(s) each; median ms, process CPU ms in ()",
        tch_version()
    );
    println!("| case | op | hvq-cpu | libtorch | hvq-cpu / libtorch |");
    println!("| --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for &(preset, width, height, runs) in CASES.iter() {
        let (name, weights) = match (&given, &given_name) {
            (Some(w), Some(n)) if preset == "small" => (n.clone(), w.clone()),
            (Some(_), _) => continue,
            _ => (
                preset.to_string(),
                random_weights(&ModelConfig::preset(preset).expect("preset"), 1)
                    .expect("random weights validate"),
            ),
        };
        let case = Case {
            preset: name,
            width,
            height,
            runs,
        };
        if format!("{} {}x{}", case.preset, width, height).contains(&filter) {
            rows.extend(run_case(&case, &weights, &pool));
        }
    }
    if let Ok(path) = std::env::var("HVQ_BENCH_JSON") {
        // `cargo bench` runs this from `train/`: relative paths mean the repository root.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = root.join(path).display().to_string();
        let json = serde_json::json!({ "threads": threads, "rows": rows });
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

fn tch_version() -> String {
    std::env::var("LIBTORCH")
        .ok()
        .and_then(|p| std::fs::read_to_string(format!("{p}/version.py")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("__version__"))
                .map(|l| l.split('\'').nth(1).unwrap_or("").to_string())
        })
        .unwrap_or_else(|| "torch".into())
}
