//! The tiny model and the test image that the library tests (`codec/tests`) and the CLI tests
//! (`codec/cli/tests`, which include this file by path) share; the CLI's JPEG fixtures in
//! `codec/cli/tests/data/` were made from [`pattern`].

use hvq_codec::RgbImage;
use hvq_spec::{ModelConfig, Weights, random_weights};

/// Tiny random weights: fast on the CPU, strides 2, 4, 8 over 3 levels.
pub fn tiny_weights(seed: u64) -> Weights {
    random_weights(&ModelConfig::tiny(), seed).expect("the tiny preset is valid")
}

/// A smooth colour pattern with some texture, the same on every run.
pub fn pattern(width: u32, height: u32) -> RgbImage {
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            data.push((x * 255 / width.max(1)) as u8);
            data.push((y * 255 / height.max(1)) as u8);
            data.push(((x * 31 + y * 17) % 256) as u8);
        }
    }
    RgbImage::new(width, height, data).expect("buffer matches size")
}
