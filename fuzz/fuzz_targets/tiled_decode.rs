//! Tiled decoding: any image size and any grid (right-sized or not, tokens in or out of range)
//! decodes to an image of that size or gives a typed error, never a panic. Tiles of 32 pixels
//! with an 8-pixel halo, so even small inputs cross many tile and blend-band boundaries.
#![no_main]

use std::sync::LazyLock;

use hvq_codec::{Backend, Codec, Limits, Tiling, TokenGrid};
use hvq_spec::{ModelConfig, random_weights};

static CODEC: LazyLock<Codec> = LazyLock::new(|| {
    let config = ModelConfig { mid_attention: false, ..ModelConfig::tiny() };
    Codec::builder(random_weights(&config, 1).unwrap())
        .backend(Backend::Cpu)
        .tiling(Tiling { whole_max_pixels: 0, tile: 32, overlap: 8 })
        .limits(Limits { max_pixels: 1 << 16, ..Limits::default() })
        .build()
        .unwrap()
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<5>() else { return };
    let width = u32::from(u16::from_le_bytes([head[0], head[1]]));
    let height = u32::from(u16::from_le_bytes([head[2], head[3]]));
    let level = usize::from(head[4] & 3);
    let (mut gw, mut gh) = CODEC.grid_size(level.min(2), width, height);
    if head[4] & 0x80 != 0 {
        // A grid that does not fit the size must be refused, not read out of bounds.
        gw += usize::from(head[4] >> 5 & 1);
        gh += usize::from(head[4] >> 6 & 1);
    }
    if gw.saturating_mul(gh) > 1 << 14 {
        return;
    }
    let tokens = (0..gw * gh)
        .map(|i| rest.get(i % rest.len().max(1)).map_or(0, |&b| u32::from(b) % 40))
        .collect();
    let grid = TokenGrid { level, width: gw, height: gh, tokens };
    if let Ok(img) = CODEC.decode(&grid, width, height) {
        assert_eq!((img.width(), img.height()), (width, height));
    }
});
