//! Shared test helpers: the device (or a loud skip) and seeded data.

#![allow(dead_code)] // each test binary uses a different subset

use hvq_spec::{FeatureMap, Tensor};
use hvq_wgpu::{GpuContext, GpuError};

/// The device, or `None` after printing a loud skip notice (no adapter on this machine).
pub fn context() -> Option<GpuContext> {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // The Vulkan loader warns without it; a private mode-700 folder silences it.
        let dir = std::env::temp_dir().join("hvq-wgpu-xdg");
        let _ = std::fs::create_dir_all(&dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // SAFETY: set before any thread of this test binary reads the environment... tests
        // run in threads, but they only read XDG_RUNTIME_DIR through the Vulkan loader, which
        // this same call precedes in every test.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
    match pollster::block_on(GpuContext::new()) {
        Ok(ctx) => Some(ctx),
        Err(GpuError::NoAdapter(e)) => {
            let why = format!(
                "no wgpu adapter ({e}); install Mesa lavapipe (mesa-vulkan-drivers) to run this test"
            );
            // scripts/test.sh installs lavapipe and sets this: there a missing adapter is a
            // failure, so the wgpu tests cannot pass without running.
            assert!(
                std::env::var_os("HVQ_REQUIRE_WGPU").is_none(),
                "HVQ_REQUIRE_WGPU is set: {why}"
            );
            skip(&why);
            None
        }
        Err(e) => panic!("an adapter exists but the device failed: {e}"),
    }
}

/// Prints a skip notice that the test harness does not capture (`eprintln!` output of a
/// passing test is swallowed; a direct write to stderr is not), so a skip is never silent.
pub fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {reason} ***\n");
}

/// Prints a result line (agreement rates) that shows even when the harness captures output.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// SplitMix64-based uniform values in `[-1, 1)`, reproducible across platforms.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    pub fn map(&mut self, channels: usize, height: usize, width: usize) -> FeatureMap {
        let data = (0..channels * height * width)
            .map(|_| self.next())
            .collect();
        FeatureMap {
            channels,
            height,
            width,
            data,
        }
    }

    pub fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            data: (0..n).map(|_| scale * self.next()).collect(),
        }
    }

    /// An image in `[0, 1]`.
    pub fn image(&mut self, height: usize, width: usize) -> FeatureMap {
        let mut m = self.map(3, height, width);
        m.data.iter_mut().for_each(|v| *v = 0.5 * (*v + 1.0));
        m
    }
}

/// Asserts `|got - want| <= atol + rtol * |want|` element-wise, naming the first failure.
pub fn assert_close(what: &str, got: &FeatureMap, want: &FeatureMap, atol: f32, rtol: f32) {
    assert_eq!(
        (got.channels, got.height, got.width),
        (want.channels, want.height, want.width),
        "{what}: shape"
    );
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}: element {i}: got {g}, want {w} (|diff| {err})"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: max |diff| {worst:e}");
}

/// Squared distance from position `i` of `p` to codebook row `k`.
pub fn dist(p: &FeatureMap, codebook: &[f32], i: usize, k: u32) -> f32 {
    let d = p.channels;
    (0..d)
        .map(|c| (p.data[c * p.plane() + i] - codebook[k as usize * d + c]).powi(2))
        .sum()
}
