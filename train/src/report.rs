//! Tables of several evaluations side by side: the seed paper's Table 1 (per-level
//! reconstruction of every model) and Table 2 (codebook entries shared by the levels), made
//! from the `eval.json` files that `hvq-train eval` writes.
//!
//! ```no_run
//! use hvq_train::report::{EvalRow, table1, table2};
//! # fn main() -> Result<(), hvq_train::TrainError> {
//! let rows = vec![EvalRow::read("pooling", "runs/suite-cpu/pooling/eval-kodak/eval.json".as_ref())?];
//! println!("{}\n{}", table1(&rows), table2(&rows));
//! # Ok(()) }
//! ```

use std::path::Path;

use serde_json::Value;

use crate::TrainError;

/// One model's evaluation, as read back from its `eval.json`.
#[derive(Debug, Clone)]
pub struct EvalRow {
    /// The model's label in the tables.
    pub label: String,
    /// The parsed report.
    pub report: Value,
}

impl EvalRow {
    /// Reads `path` (an `eval.json`).
    ///
    /// Errors: [`TrainError::Io`], or [`TrainError::LogParse`] when it is not JSON.
    pub fn read(label: &str, path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let report = serde_json::from_str(&text).map_err(|source| TrainError::LogParse {
            path: path.to_path_buf(),
            line: 1,
            source,
        })?;
        Ok(EvalRow {
            label: label.to_string(),
            report,
        })
    }

    fn levels(&self) -> &[Value] {
        self.report["levels"].as_array().map_or(&[], Vec::as_slice)
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"))
}

/// Table 1: per model and level, L1 (normalized units), LPIPS-VGG, LPIPS-Alex and PSNR.
pub fn table1(rows: &[EvalRow]) -> String {
    let mut s = String::from(
        "| model | level | stride | L1 (normalized) | LPIPS-VGG | LPIPS-Alex | PSNR dB |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        for m in r.levels() {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.label,
                m["level"],
                m["stride"],
                num(&m["l1_normalized"], 4),
                num(&m["lpips_vgg"], 4),
                num(&m["lpips_alex"], 4),
                num(&m["psnr"], 2),
            );
        }
    }
    s
}

/// Table 2: per multi-level model, entries used by every level against chance, entries used
/// at least five times by every level, the share of the coarsest level's entries used by all,
/// and the share of each coarser level's tokens on entries the finest level uses.
pub fn table2(rows: &[EvalRow]) -> String {
    let mut s = String::from(
        "| model | entries used per level | used by all levels | chance | used ≥ 5× by all | coarsest level's entries used by all | tokens on finest level's entries (level 1, 2, …) |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| r.levels().len() > 1) {
        let sh = &r.report["sharing"];
        let used: Vec<String> = r
            .levels()
            .iter()
            .map(|m| m["codebook_usage"].to_string())
            .collect();
        let shares: Vec<String> = sh["tokens_on_finest_entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                v.as_f64()
                    .map_or("–".into(), |x| format!("{:.1} %", 100.0 * x))
            })
            .collect();
        s += &format!(
            "| {} | {} | {} / {} | {} | {} | {} | {} |\n",
            r.label,
            used.join(" / "),
            sh["used_by_all"],
            r.report["codebook_size"],
            num(&sh["used_by_all_chance"], 0),
            sh["used_by_all_min_uses"],
            sh["coarsest_entries_shared"]
                .as_f64()
                .map_or("–".into(), |x| format!("{:.1} %", 100.0 * x)),
            shares.join(", "),
        );
    }
    s
}

/// Figure 5 of the seed paper: one row per model, the original centre crop and then each
/// level's reconstruction (finest first), `size`×`size` tiles separated by a 4-pixel white gap.
/// Single-level models fill their stride's column (the column of the 3-level model's level
/// with the same stride) and leave the others white.
///
/// Errors: unreadable weights or image, libtorch errors.
pub fn reconstruction_grid(
    models: &[(String, std::path::PathBuf)],
    image: &Path,
    size: u32,
    device: tch::Device,
) -> Result<image::RgbImage, TrainError> {
    let x = crate::data::load_center_crop(image, size)?
        .unsqueeze(0)
        .to_device(device);
    let mut rows: Vec<(Vec<usize>, Vec<tch::Tensor>)> = Vec::new();
    for (_, path) in models {
        let weights = crate::export::read_weights(path)?;
        let cfg = weights.config().clone();
        let (_vs, model) = crate::eval::load_model(&weights, device)?;
        let recons = crate::eval::reconstruct(&model, &x);
        let strides = (0..cfg.levels).map(|l| cfg.level_stride(l)).collect();
        rows.push((strides, recons.into_iter().map(|(_, y)| y).collect()));
    }
    let mut columns: Vec<usize> = rows.iter().flat_map(|(s, _)| s.iter().copied()).collect();
    columns.sort_unstable();
    columns.dedup();
    let gap = 4;
    let tile = size + gap;
    let mut grid = image::RgbImage::from_pixel(
        tile * (columns.len() as u32 + 1),
        tile * rows.len() as u32,
        image::Rgb([255, 255, 255]),
    );
    for (r, (strides, recons)) in rows.iter().enumerate() {
        paste(&mut grid, &x, 0, r as u32 * tile)?;
        for (stride, y) in strides.iter().zip(recons) {
            let c = columns.iter().position(|s| s == stride).unwrap_or(0) as u32 + 1;
            paste(&mut grid, y, c * tile, r as u32 * tile)?;
        }
    }
    Ok(grid)
}

/// Draws `t` `[1, 3, H, W]` in [0, 1] into `grid` at `(x0, y0)`.
fn paste(grid: &mut image::RgbImage, t: &tch::Tensor, x0: u32, y0: u32) -> Result<(), TrainError> {
    let t = t.squeeze_dim(0).to_device(tch::Device::Cpu).contiguous();
    let (h, w) = (t.size()[1] as u32, t.size()[2] as u32);
    let v = Vec::<f32>::try_from(&t.view([-1]))?;
    let plane = (h * w) as usize;
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) as usize;
            let px = |c: usize| (v[c * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8;
            grid.put_pixel(x0 + x, y0 + y, image::Rgb([px(0), px(1), px(2)]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, levels: usize) -> EvalRow {
        let lv: Vec<Value> = (0..levels)
            .map(|l| {
                serde_json::json!({"level": l, "stride": 4 << l, "l1_normalized": 0.1 * (l + 1) as f64,
                    "lpips_vgg": null, "lpips_alex": 0.5, "psnr": 22.0, "codebook_usage": 100 - l})
            })
            .collect();
        EvalRow {
            label: label.into(),
            report: serde_json::json!({"codebook_size": 1024, "levels": lv, "sharing": {
                "used_by_all": 90, "used_by_all_chance": 9.4, "used_by_all_min_uses": 80,
                "coarsest_entries_shared": 0.92, "tokens_on_finest_entries": [0.99, 0.975]}}),
        }
    }

    #[test]
    fn tables_hold_one_line_per_level_and_per_multi_level_model() {
        let rows = [row("pooling", 3), row("single-s4", 1)];
        let t1 = table1(&rows);
        assert_eq!(t1.lines().count(), 2 + 4);
        assert!(
            t1.contains("| pooling | 2 | 16 | 0.3000 | – | 0.5000 | 22.00 |"),
            "{t1}"
        );
        let t2 = table2(&rows);
        assert_eq!(
            t2.lines().count(),
            3,
            "single-level models have no sharing row"
        );
        assert!(
            t2.contains(
                "| pooling | 100 / 99 / 98 | 90 / 1024 | 9 | 80 | 92.0 % | 99.0 %, 97.5 % |"
            ),
            "{t2}"
        );
    }
}
