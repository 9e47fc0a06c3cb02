//! Large images in tiles, so that memory is set by a tile size and not by the image.
//!
//! An image whose padded size is at most [`Tiling::whole_max_pixels`] runs whole, exactly as the
//! model was trained and as the conformance vectors check. A larger one is cut into a fixed grid
//! of core tiles (about [`Tiling::tile`] pixels on a side, multiples of the coarsest stride, split
//! evenly so no sliver tile appears). Each tile runs with a halo of [`Tiling::overlap`] pixels of
//! real neighbouring image around its core, so the convolutions near a core's edge see what they
//! would see in the whole image:
//!
//! - **encoding** keeps the tokens of each core only; the token grids are the same shape as for
//!   a whole-image run, so the `.hvq` format does not change;
//! - **decoding** runs each tile's decoder on the tokens of its core and halo and blends
//!   neighbouring tiles with linear ramps over a band of `overlap` pixels centred on each core
//!   boundary (weights sum to one), so no seam is visible.
//!
//! What it costs: GroupNorm statistics are those of the tile, not of the whole image, so tokens
//! of a tiled image differ slightly from a whole-image run (which a desktop could not hold for a
//! 48-megapixel photo anyway); the tile grid depends only on the image size, so one image always
//! gives the same tokens on every backend. Compute grows by the halo, about
//! `((tile + 2·overlap) / tile)²` (1.27× at the defaults), and stays linear in pixels.

use hvq_spec::FeatureMap;

use crate::RgbImage;

/// How images are split into tiles (what tiling costs: `docs/format.md` §9 and the comments of
/// `codec/src/tiling.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Images of at most this many pixels (after padding to the coarsest stride) run whole.
    pub whole_max_pixels: u64,
    /// Side of a core tile in pixels (rounded up to the model's coarsest stride). Very thin
    /// images get tiles of the same area, as wide (or tall) as the image.
    pub tile: u32,
    /// Halo of real image around each core in pixels (rounded up to the coarsest stride); half of
    /// it on each side of a core boundary is blended when decoding.
    pub overlap: u32,
}

impl Default for Tiling {
    fn default() -> Self {
        // A 512 + 2·32 tile holds the CPU backend's peak near 0.6 GB with the `small` model, and a
        // Kodak photo (768×512, 1.5 tiles) still runs whole, so every Kodak figure is a
        // whole-image figure.
        Tiling::with_tile(512)
    }
}

impl Tiling {
    /// Tiles of `tile` pixels a side with a 32-pixel halo; an image of at most 1.5 tiles' area
    /// runs whole (cutting it would cost more halo than it saves memory).
    pub const fn with_tile(tile: u32) -> Self {
        Tiling {
            whole_max_pixels: tile as u64 * tile as u64 * 3 / 2,
            tile,
            overlap: 32,
        }
    }

    /// Every image runs whole, whatever its size: memory then grows with the image.
    pub const fn never() -> Self {
        Tiling {
            whole_max_pixels: u64::MAX,
            tile: 512,
            overlap: 32,
        }
    }
}

/// How far an encode or decode has got, in tiles (an image that runs whole is one tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Tiles finished.
    pub done: usize,
    /// Tiles in all.
    pub total: usize,
}

/// One tile's extent along one axis, in pixels of the padded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The pixels this tile is responsible for.
    pub core: (usize, usize),
    /// The pixels it is run on: the core and its halo, clipped to the image.
    pub input: (usize, usize),
}

impl Span {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.input.1 - self.input.0
    }
}

/// The tile grid of one padded image: spans along x and y, and the half-width of the blend band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub xs: Vec<Span>,
    pub ys: Vec<Span>,
    /// Half-width of the blending band around each internal core boundary, in pixels.
    band: usize,
}

impl Plan {
    /// The grid for a `width × height` padded image (both multiples of `stride`).
    pub(crate) fn new(tiling: &Tiling, width: usize, height: usize, stride: usize) -> Plan {
        let whole = Span {
            core: (0, width),
            input: (0, width),
        };
        if (width as u64).saturating_mul(height as u64) <= tiling.whole_max_pixels {
            let ys = vec![Span {
                core: (0, height),
                input: (0, height),
            }];
            return Plan {
                xs: vec![whole],
                ys,
                band: 0,
            };
        }
        let round_up = |v: usize| v.max(1).div_ceil(stride) * stride;
        // Cores are at least tile/2 − stride wide (even split); a halo of at most tile/4 keeps
        // the two blend bands of a core from overlapping.
        let tile = round_up((tiling.tile as usize).max(4 * stride));
        let halo = if tiling.overlap == 0 {
            0
        } else {
            round_up(tiling.overlap as usize).min(tile / 4 / stride * stride)
        };
        // A thin image gets tiles of the same area, as long as the image is narrow, so a 16-pixel
        // wide strip is not cut into thousands of 16×512 tiles.
        let area = tile * tile;
        let stretch = |short: usize| ((area / short) / stride * stride).max(tile);
        let (tw, th) = if width <= tile {
            (width, stretch(width))
        } else if height <= tile {
            (stretch(height), height)
        } else {
            (tile, tile)
        };
        Plan {
            xs: split(width, tw, halo, stride),
            ys: split(height, th, halo, stride),
            band: halo / 2,
        }
    }

    /// Number of tiles.
    pub(crate) fn tiles(&self) -> usize {
        self.xs.len() * self.ys.len()
    }

    /// The largest tile input in pixels (what sets peak memory).
    #[cfg(test)]
    fn max_tile_pixels(&self) -> usize {
        let max = |s: &[Span]| s.iter().map(Span::len).max().unwrap_or(0);
        max(&self.xs) * max(&self.ys)
    }
}

/// `len` pixels cut evenly into `ceil(len / tile)` cores of whole strides, each with `halo`.
fn split(len: usize, tile: usize, halo: usize, stride: usize) -> Vec<Span> {
    let n = len.div_ceil(tile).max(1);
    let units = len / stride;
    let (base, extra) = (units / n, units % n);
    let mut start = 0;
    (0..n)
        .map(|i| {
            let end = start + (base + usize::from(i < extra)) * stride;
            let span = Span {
                core: (start, end),
                input: (start.saturating_sub(halo), (end + halo).min(len)),
            };
            start = end;
            span
        })
        .collect()
}

/// The blend weight of tile `i` of `spans` at pixel `p`: one inside its core, ramping linearly to
/// zero across a band of `2·band` pixels centred on each boundary shared with a neighbour. The
/// two tiles at a boundary sum to one at every pixel.
fn weight(spans: &[Span], i: usize, p: usize, band: usize) -> f32 {
    let (lo, hi) = spans[i].core;
    if band == 0 {
        return if (lo..hi).contains(&p) { 1.0 } else { 0.0 };
    }
    let x = p as f32 + 0.5;
    let width = (2 * band) as f32;
    let rise = if i > 0 {
        ((x - (lo - band) as f32) / width).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let fall = if i + 1 < spans.len() {
        (((hi + band) as f32 - x) / width).clamp(0.0, 1.0)
    } else {
        1.0
    };
    rise.min(fall)
}

/// The pixels tile `i` of `spans` contributes to: its core, widened by `band` on shared sides.
fn reach(spans: &[Span], i: usize, band: usize) -> (usize, usize) {
    let (lo, hi) = spans[i].core;
    let lo = if i > 0 { lo - band } else { lo };
    let hi = if i + 1 < spans.len() { hi + band } else { hi };
    (lo, hi)
}

/// The model's input for one tile: CHW f32 in `[0, 1]` over `xs × ys` of the padded image, edge
/// replicated beyond the real image (DESIGN.md §5: the encoder must not see a black border).
pub(crate) fn input_map(image: &RgbImage, xs: (usize, usize), ys: (usize, usize)) -> FeatureMap {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (tw, th) = (xs.1 - xs.0, ys.1 - ys.0);
    let data = image.as_bytes();
    let mut map = FeatureMap::zeros(3, th, tw);
    for c in 0..3 {
        for ty in 0..th {
            let row = (ys.0 + ty).min(h - 1) * w;
            let out = (c * th + ty) * tw;
            for tx in 0..tw {
                let v = data[(row + (xs.0 + tx).min(w - 1)) * 3 + c];
                map.data[out + tx] = f32::from(v) / 255.0;
            }
        }
    }
    map
}

/// Assembles decoded tiles into the cropped 8-bit image, blending shared bands, while holding
/// only one stripe's worth of partial sums: a column band carried from tile to tile along a
/// stripe, and a row band carried from stripe to stripe.
pub(crate) struct Assembler {
    plan: Plan,
    /// Padded width.
    width: usize,
    /// Output (real) size.
    out_w: usize,
    out_h: usize,
    out: Vec<u8>,
    /// Partial sums of the rows shared with the previous stripe: `2·band` rows × padded width × 3.
    rows_in: Vec<f32>,
    rows_out: Vec<f32>,
    /// Partial sums of the columns shared with the previous tile in this stripe.
    cols: Vec<f32>,
}

impl Assembler {
    pub(crate) fn new(plan: Plan, width: usize, out_w: usize, out_h: usize) -> Self {
        let carry = if plan.ys.len() > 1 {
            2 * plan.band * width * 3
        } else {
            0
        };
        Assembler {
            width,
            out_w,
            out_h,
            out: vec![0; out_w * out_h * 3],
            rows_in: vec![0.0; carry],
            rows_out: vec![0.0; carry],
            cols: Vec::new(),
            plan,
        }
    }

    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Adds tile `(i, j)`'s decoded RGB map (its input extent) into the image. Tiles must come
    /// row by row (`j` outer), left to right.
    pub(crate) fn add(&mut self, i: usize, j: usize, map: &FeatureMap) {
        let band = self.plan.band;
        let (xs, ys) = (self.plan.xs[i], self.plan.ys[j]);
        let (rx, ry) = (reach(&self.plan.xs, i, band), reach(&self.plan.ys, j, band));
        let (cw, ch) = (rx.1 - rx.0, ry.1 - ry.0);
        let wx: Vec<f32> = (rx.0..rx.1)
            .map(|x| weight(&self.plan.xs, i, x, band))
            .collect();
        let wy: Vec<f32> = (ry.0..ry.1)
            .map(|y| weight(&self.plan.ys, j, y, band))
            .collect();
        // The weighted contribution over the reach, interleaved RGB like the output.
        let mut acc = vec![0.0f32; cw * ch * 3];
        for (cy, &wyv) in wy.iter().enumerate() {
            let my = ry.0 + cy - ys.input.0;
            for (cx, &wxv) in wx.iter().enumerate() {
                let mx = rx.0 + cx - xs.input.0;
                let w = wxv * wyv;
                for c in 0..3 {
                    acc[(cy * cw + cx) * 3 + c] = w * map.at(c, my, mx);
                }
            }
        }
        let (shared_left, shared_right) = (i > 0, i + 1 < self.plan.xs.len());
        let bw = 2 * band;
        if shared_left {
            for cy in 0..ch {
                for k in 0..bw * 3 {
                    acc[cy * cw * 3 + k] += self.cols[cy * bw * 3 + k];
                }
            }
        }
        let final_w = if shared_right {
            self.cols = vec![0.0; ch * bw * 3];
            for cy in 0..ch {
                let src = (cy * cw + cw - bw) * 3;
                self.cols[cy * bw * 3..(cy + 1) * bw * 3].copy_from_slice(&acc[src..src + bw * 3]);
            }
            cw - bw
        } else {
            cw
        };
        self.finish_columns(&acc, (rx.0, cw, final_w), (ry.0, ch), j);
    }

    /// Rows of the finished columns `x0..x0+n` of one tile: the top band gets the previous
    /// stripe's partial sums, the bottom band is kept for the next stripe, the rest is written.
    fn finish_columns(
        &mut self,
        acc: &[f32],
        (x0, cw, n): (usize, usize, usize),
        (y0, ch): (usize, usize),
        j: usize,
    ) {
        let bw = 2 * self.plan.band;
        let (shared_top, shared_bottom) = (j > 0, j + 1 < self.plan.ys.len());
        let row = self.width * 3;
        for cy in 0..ch {
            let y = y0 + cy;
            for cx in 0..n {
                let x = x0 + cx;
                for c in 0..3 {
                    let mut v = acc[(cy * cw + cx) * 3 + c];
                    if shared_top && cy < bw {
                        v += self.rows_in[cy * row + x * 3 + c];
                    }
                    if shared_bottom && cy >= ch - bw {
                        self.rows_out[(cy + bw - ch) * row + x * 3 + c] = v;
                    } else if y < self.out_h && x < self.out_w {
                        self.out[(y * self.out_w + x) * 3 + c] =
                            (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }

    /// Called after the last tile of stripe `j`: its bottom band becomes the next one's top band.
    pub(crate) fn end_stripe(&mut self) {
        std::mem::swap(&mut self.rows_in, &mut self.rows_out);
    }

    pub(crate) fn into_image(self) -> RgbImage {
        RgbImage::new(self.out_w as u32, self.out_h as u32, self.out)
            .expect("the assembler's buffer is out_w × out_h × 3")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiling() -> Tiling {
        Tiling {
            whole_max_pixels: 64 * 64,
            tile: 32,
            overlap: 8,
        }
    }

    #[test]
    fn small_images_run_whole() {
        let plan = Plan::new(&Tiling::default(), 768, 512, 16);
        assert_eq!(plan.tiles(), 1);
        assert_eq!(plan.xs[0].input, (0, 768));
    }

    #[test]
    fn spans_cover_the_image_in_whole_strides_and_evenly() {
        let spans = split(528, 512, 32, 16);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].core, (0, 272));
        assert_eq!(spans[1].core, (272, 528));
        assert_eq!(spans[0].input, (0, 304));
        assert_eq!(spans[1].input, (240, 528));
        for n in [16, 48, 512, 513 / 16 * 16, 4096, 8000] {
            let s = split(n, 512, 32, 16);
            assert_eq!(s[0].core.0, 0);
            assert_eq!(s.last().unwrap().core.1, n);
            assert!(s.windows(2).all(|p| p[0].core.1 == p[1].core.0));
            assert!(s.iter().all(|t| t.core.0 % 16 == 0 && t.core.1 > t.core.0));
        }
    }

    #[test]
    fn thin_images_get_long_tiles_of_the_same_area() {
        let plan = Plan::new(&Tiling::default(), 16, 4_194_304, 16);
        assert_eq!(plan.xs.len(), 1);
        assert_eq!(plan.ys.len(), 4_194_304 / 16384);
        assert!(plan.max_tile_pixels() <= 16 * (16384 + 64));
        let plan = Plan::new(&Tiling::default(), 8192, 8192, 16);
        assert_eq!(plan.tiles(), 256);
        assert_eq!(plan.max_tile_pixels(), 576 * 576);
    }

    #[test]
    fn blend_weights_sum_to_one_everywhere() {
        let spans = split(200, 64, 16, 8);
        for p in 0..200 {
            let sum: f32 = (0..spans.len()).map(|i| weight(&spans, i, p, 8)).sum();
            assert!((sum - 1.0).abs() < 1e-6, "pixel {p}: {sum}");
        }
        for i in 0..spans.len() {
            let (lo, hi) = reach(&spans, i, 8);
            assert!(lo >= spans[i].input.0 && hi <= spans[i].input.1);
            for p in (0..200).filter(|p| !(lo..hi).contains(p)) {
                assert_eq!(weight(&spans, i, p, 8), 0.0, "tile {i} reaches pixel {p}");
            }
        }
    }

    /// Tiles that each decode to the same constant give that constant everywhere: blending
    /// introduces nothing of its own, at every size and crop.
    #[test]
    fn assembling_constant_tiles_gives_a_constant_image() {
        for (w, h, ow, oh) in [(96, 80, 90, 77), (200, 64, 200, 61), (72, 144, 70, 144)] {
            let plan = Plan::new(&tiling(), w, h, 8);
            assert!(plan.tiles() > 1, "{w}×{h}");
            let mut asm = Assembler::new(plan.clone(), w, ow, oh);
            for j in 0..plan.ys.len() {
                for i in 0..plan.xs.len() {
                    let (xs, ys) = (plan.xs[i], plan.ys[j]);
                    let map = FeatureMap {
                        channels: 3,
                        height: ys.len(),
                        width: xs.len(),
                        data: vec![0.4; 3 * ys.len() * xs.len()],
                    };
                    asm.add(i, j, &map);
                }
                asm.end_stripe();
            }
            let img = asm.into_image();
            assert!(img.as_bytes().iter().all(|&v| v == 102), "{w}×{h}");
        }
    }

    /// Tiles that reproduce a smooth image exactly reassemble to it exactly (to rounding).
    #[test]
    fn assembling_exact_tiles_reproduces_the_image() {
        let (w, h) = (120, 104);
        let value = |c: usize, y: usize, x: usize| ((x * 3 + y * 5 + c * 40) % 256) as f32 / 255.0;
        let plan = Plan::new(&tiling(), w, h, 8);
        let mut asm = Assembler::new(plan.clone(), w, w, h);
        for j in 0..plan.ys.len() {
            for i in 0..plan.xs.len() {
                let (xs, ys) = (plan.xs[i], plan.ys[j]);
                let mut map = FeatureMap::zeros(3, ys.len(), xs.len());
                for c in 0..3 {
                    for y in 0..ys.len() {
                        for x in 0..xs.len() {
                            map.data[(c * ys.len() + y) * xs.len() + x] =
                                value(c, ys.input.0 + y, xs.input.0 + x);
                        }
                    }
                }
                asm.add(i, j, &map);
            }
            asm.end_stripe();
        }
        let img = asm.into_image();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let want = (value(c, y, x) * 255.0).round() as u8;
                    assert_eq!(img.as_bytes()[(y * w + x) * 3 + c], want, "({x},{y},{c})");
                }
            }
        }
    }
}
