//! Encode/decode timings of the CPU backend on random weights (not a test: no assertions).
//!
//! `cargo bench -p hvq-cpu --bench cpu [-- FILTER]` prints the median wall time per case;
//! CPU time (all threads) is printed beside wall time: on a shared machine
//! `cpu / threads` is the better estimate of idle-machine wall time.
//! `FILTER` keeps the cases whose name contains it (e.g. `small`, `paper`, `768`).
//! Threads: rayon's default (all cores) unless `RAYON_NUM_THREADS` is set.

mod common;

use common::median_ms;
use hvq_cpu::CpuModel;
use hvq_spec::{FeatureMap, ModelConfig, TokenGrid, random_weights};

/// One benchmark case: a preset at an image size, timed `runs` times after one warm-up.
struct Case {
    preset: &'static str,
    height: usize,
    width: usize,
    runs: usize,
}

const CASES: [Case; 5] = [
    Case {
        preset: "small",
        height: 256,
        width: 256,
        runs: 7,
    },
    Case {
        preset: "small",
        height: 512,
        width: 768,
        runs: 3,
    },
    Case {
        preset: "paper",
        height: 256,
        width: 256,
        runs: 3,
    },
    Case {
        preset: "paper",
        height: 512,
        width: 768,
        runs: 1,
    },
    Case {
        preset: "tiny",
        height: 256,
        width: 256,
        runs: 7,
    },
];

fn image(h: usize, w: usize) -> FeatureMap {
    let data = (0..3 * h * w)
        .map(|i| ((i * 7919) % 1000) as f32 / 999.0)
        .collect();
    FeatureMap {
        channels: 3,
        height: h,
        width: w,
        data,
    }
}

fn run(case: &Case) {
    let cfg = ModelConfig::preset(case.preset).expect("built-in preset");
    let model = CpuModel::new(random_weights(&cfg, 1).expect("random weights validate"));
    let img = image(case.height, case.width);
    let all: Vec<usize> = (0..cfg.levels).collect();
    let mut grids: Vec<TokenGrid> = Vec::new();
    let (wall, cpu) = median_ms(case.runs, || {
        grids = model.encode(&img, &all).expect("encode")
    });
    let name = format!("{} {}x{}", case.preset, case.width, case.height);
    println!("{name:<16} encode, all levels      wall {wall:8.1} ms  cpu {cpu:8.1} ms");
    for g in &grids {
        let (wall, cpu) = median_ms(case.runs, || {
            model.decode(g).expect("decode");
        });
        let what = format!("decode L{} ({}x{})", g.level, g.width, g.height);
        println!("{name:<16} {what:<23} wall {wall:8.1} ms  cpu {cpu:8.1} ms");
    }
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    println!(
        "hvq-cpu bench: {} rayon threads, median of N runs after 1 warm-up",
        rayon_threads()
    );
    for case in CASES
        .iter()
        .filter(|c| format!("{} {}x{}", c.preset, c.width, c.height).contains(&filter))
    {
        run(case);
    }
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "?".into())
    })
}
