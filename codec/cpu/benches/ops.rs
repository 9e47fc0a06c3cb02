//! Per-op timings of the CPU backend at the shapes of the `small` preset (not a test).
//!
//! `cargo bench -p hvq-cpu --bench ops`: wall and process CPU time per op, and GFLOP/s of
//! the convolutions by CPU time (steadier than wall time on a shared machine).

mod common;

use std::time::Instant;

use common::process_cpu_ms;

use hvq_cpu::ops::{self, Conv2dParams, GroupNormParams};
use hvq_spec::{FeatureMap, Tensor};

fn filled(shape: &[usize], seed: usize) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor {
        shape: shape.to_vec(),
        data: (0..n)
            .map(|i| (((i + seed) * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect(),
    }
}

fn map(c: usize, h: usize, w: usize) -> FeatureMap {
    let t = filled(&[c, h, w], 3);
    FeatureMap {
        channels: c,
        height: h,
        width: w,
        data: t.data,
    }
}

fn time(name: &str, flops: f64, runs: usize, mut f: impl FnMut()) {
    f();
    let (t0, c0) = (Instant::now(), process_cpu_ms());
    for _ in 0..runs {
        f();
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let cpu = (process_cpu_ms() - c0) / runs as f64;
    let gflops = if flops > 0.0 && cpu > 0.0 {
        format!("{:6.1} GFLOP/s per busy core", flops / cpu / 1e6)
    } else {
        String::new()
    };
    println!("{name:<40} wall {wall:8.2} ms  cpu {cpu:8.2} ms  {gflops}");
}

fn conv_case(name: &str, c: (usize, usize), hw: (usize, usize), params: Conv2dParams) {
    let x = map(c.0, hw.0, hw.1);
    let (w, b) = (filled(&[c.1, c.0, 3, 3], 1), filled(&[c.1], 2));
    let out = ops::conv2d(&x, &w, &b, params).expect("shapes fit");
    let flops = 2.0 * (c.0 * c.1 * 9 * out.plane()) as f64;
    time(name, flops, 5, || {
        ops::conv2d(&x, &w, &b, params).expect("shapes fit");
    });
}

/// Raw GEMM speed of the crate the convolutions use, single-threaded, for comparison.
fn gemm_case(m: usize, n: usize, k: usize) {
    let (a, b) = (filled(&[m, k], 1), filled(&[k, n], 2));
    let mut c = vec![0.0f32; m * n];
    time(
        &format!("gemm {m}x{k} * {k}x{n} (1 thread)"),
        2.0 * (m * n * k) as f64,
        5,
        || unsafe {
            // SAFETY: row-major a (m×k), b (k×n), c (m×n), all sized above.
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.data.as_ptr(),
                1,
                k as isize,
                b.data.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        },
    );
}

fn main() {
    gemm_case(64, 256, 576);
    gemm_case(64, 4096, 576);
    gemm_case(512, 512, 512);
    gemm_case(4096, 64, 576);
    gemm_case(256, 64, 576);
    gemm_case(128, 256, 1152);
    gemm_case(128, 1024, 1152);
    conv_case(
        "conv3x3 64->64 256x256",
        (64, 64),
        (256, 256),
        Conv2dParams::SAME,
    );
    conv_case(
        "conv3x3 128->128 64x64",
        (128, 128),
        (64, 64),
        Conv2dParams::SAME,
    );
    conv_case(
        "conv3x3 64->64 s2 256x256",
        (64, 64),
        (256, 256),
        Conv2dParams::DOWNSAMPLE,
    );
    let x = map(128, 128, 128);
    let (w, b) = (filled(&[128, 128, 3, 3], 1), filled(&[128], 2));
    let flops = 2.0 * (128usize * 128 * 9 * 256 * 256) as f64 * 4.0 / 9.0;
    time("upsample_conv 128->128 128->256", flops, 3, || {
        ops::upsample_conv2d(&x, &w, &b).expect("shapes fit");
    });
    let x = map(64, 256, 256);
    let (g, be) = (filled(&[64], 1), filled(&[64], 2));
    let p = GroupNormParams {
        gamma: &g,
        beta: &be,
        groups: 32,
        eps: 1e-6,
        swish: true,
    };
    time("group_norm+swish 64x256x256", 0.0, 5, || {
        ops::group_norm(&x, p).expect("shapes fit");
    });
    let p = GroupNormParams { swish: false, ..p };
    time("group_norm 64x256x256", 0.0, 5, || {
        ops::group_norm(&x, p).expect("shapes fit");
    });
    let mut y = x.clone();
    time("swish_inplace 64x256x256", 0.0, 5, || {
        ops::swish_inplace(&mut y)
    });
    let pmap = map(64, 64, 64);
    let cb = filled(&[8192, 64], 5);
    time(
        "nearest_codes 8192x64, 64x64",
        2.0 * (8192usize * 64 * 4096) as f64,
        3,
        || {
            ops::nearest_codes(&pmap, &cb).expect("shapes fit");
        },
    );
}
