//! Timing helpers shared by the benchmarks (`hvq-cpu`'s, and `hvq-train`'s side-by-side one,
//! which includes this file by path): wall time and the CPU time of the whole process.

#![allow(dead_code)] // each benchmark uses a subset

use std::time::Instant;

/// CPU time of all this process's threads in ms (nanosecond `schedstat` counters); 0 where
/// `/proc` is unavailable. On a shared machine, CPU time shows the work done, while wall time
/// also counts waiting for other processes.
pub fn process_cpu_ms() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

/// Median wall time and median process CPU time (ms) over `runs` runs after one warm-up.
pub fn median_ms(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm-up: page faults, thread pools
    let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..runs.max(1))
        .map(|_| {
            let (t, c) = (Instant::now(), process_cpu_ms());
            f();
            (t.elapsed().as_secs_f64() * 1e3, process_cpu_ms() - c)
        })
        .unzip();
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (wall[wall.len() / 2], cpu[cpu.len() / 2])
}
