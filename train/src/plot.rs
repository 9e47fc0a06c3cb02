//! Loss curves per level from training logs, drawn to PNG (like Figures 3–4 of the seed paper:
//! one panel per level, one line per run).
//!
//! Logs are JSON lines; each line with a numeric `step` contributes. Per-level values are found
//! in either layout (both may be nested objects, flattened with `.`):
//! - `"levels": [{"l1": .., "perceptual": .., "total": ..}, ...]`: the array index is the level;
//! - keys `loss.l0`, `loss_l1`, `loss.level2.perceptual`, ...: the digits after `l`/`level`
//!   name the level, the rest (if any) the component; a bare `loss.lK` is that level's `total`.
//!
//! Text needs a TrueType font, read at run time from [`FONT_PATHS`] (Debian `fonts-dejavu-core`)
//! so that no system font library is linked; without one the figure is drawn without text.
//!
//! ```no_run
//! use hvq_train::plot::{PlotOptions, plot_losses};
//! # fn main() -> Result<(), hvq_train::TrainError> {
//! let runs = vec![("pooling".to_string(), "runs/pool/log.jsonl".into()), ("sampling".to_string(), "runs/samp/log.jsonl".into())];
//! plot_losses(&runs, "losses.png".as_ref(), &PlotOptions::default())?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use serde_json::Value;

use crate::TrainError;

/// Fonts tried, in order, for the figure's text.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Line colours of the runs, in order (then repeated).
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// How the figure is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// The per-level component to plot (`total`, `l1`, `perceptual`, `codebook`, `commit`, ...).
    /// When no run has it, the first component (alphabetically) found is plotted instead, and the
    /// panel titles name it.
    pub metric: String,
    /// Logarithmic y axis (non-positive values are left out).
    pub log_y: bool,
    /// Trailing moving-average window in log lines (1 = raw values).
    pub smooth: usize,
    /// Figure width in pixels.
    pub width: u32,
    /// Figure height in pixels.
    pub height: u32,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            metric: "total".into(),
            log_y: true,
            smooth: 1,
            width: 1200,
            height: 400,
        }
    }
}

/// One run's per-level series: `level → component → [(step, value)]`, in log order.
pub type LevelSeries = BTreeMap<usize, BTreeMap<String, Vec<(f64, f64)>>>;

/// Reads a JSON-lines training log into per-level series. Blank lines and lines without a
/// numeric `step` are skipped (a log may interleave other records).
///
/// Errors: [`TrainError::Io`] when the file cannot be read, [`TrainError::LogParse`] naming the
/// line that is not JSON.
pub fn read_log(path: &Path) -> Result<LevelSeries, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut series = LevelSeries::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|source| TrainError::LogParse {
            path: path.to_path_buf(),
            line: n + 1,
            source,
        })?;
        let Some(step) = value.get("step").and_then(Value::as_f64) else {
            continue;
        };
        for (level, component, v) in level_values(&value) {
            series
                .entry(level)
                .or_default()
                .entry(component)
                .or_default()
                .push((step, v));
        }
    }
    Ok(series)
}

/// Every `(level, component, value)` of one log record.
fn level_values(record: &Value) -> Vec<(usize, String, f64)> {
    let mut out = Vec::new();
    let Some(obj) = record.as_object() else {
        return out;
    };
    for (key, value) in obj {
        if key == "levels" {
            for (level, entry) in value.as_array().into_iter().flatten().enumerate() {
                let mut flat = Vec::new();
                flatten("", entry, &mut flat);
                out.extend(
                    flat.into_iter()
                        .map(|(k, v)| (level, if k.is_empty() { "total".into() } else { k }, v)),
                );
            }
        } else if key.starts_with("loss") {
            let mut flat = Vec::new();
            flatten(key, value, &mut flat);
            out.extend(
                flat.into_iter()
                    .filter_map(|(k, v)| parse_loss_key(&k).map(|(l, c)| (l, c, v))),
            );
        }
    }
    out
}

/// Flattens nested objects/arrays into `a.b.0.c` keys with their finite numeric values.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Number(n) => out.extend(
            n.as_f64()
                .filter(|v| v.is_finite())
                .map(|v| (prefix.to_string(), v)),
        ),
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&join(k), v, out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&join(&i.to_string()), v, out)),
        _ => {}
    }
}

/// `loss.l0` → (0, "total"); `loss_level2.perceptual` → (2, "perceptual"); `loss` → None.
fn parse_loss_key(key: &str) -> Option<(usize, String)> {
    let rest = key.strip_prefix("loss")?.trim_start_matches(['.', '_']);
    let rest = rest
        .strip_prefix("level")
        .or_else(|| rest.strip_prefix('l'))?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let level = rest[..digits].parse().ok()?;
    let component = rest[digits..].trim_start_matches(['.', '_']);
    Some((
        level,
        if component.is_empty() {
            "total".into()
        } else {
            component.to_string()
        },
    ))
}

/// Draws one panel per level with one line per run into `out_png`.
///
/// `runs` are `(label, log path)` pairs. Returns the component actually plotted (see
/// [`PlotOptions::metric`]).
///
/// Errors: those of [`read_log`]; [`TrainError::NoLossData`] when no log has a per-level value;
/// [`TrainError::BadConfig`] for a zero-sized figure; [`TrainError::Plot`] when drawing or
/// writing the PNG fails.
pub fn plot_losses(
    runs: &[(String, PathBuf)],
    out_png: &Path,
    opts: &PlotOptions,
) -> Result<String, TrainError> {
    if opts.width == 0 || opts.height == 0 {
        return Err(TrainError::bad_config(
            "plot.size",
            "width and height must be positive",
        ));
    }
    let logs = runs
        .iter()
        .map(|(_, p)| read_log(p))
        .collect::<Result<Vec<_>, _>>()?;
    let no_data = || TrainError::NoLossData {
        paths: runs.iter().map(|(_, p)| p.clone()).collect(),
    };
    let metric = choose_metric(&logs, &opts.metric).ok_or_else(no_data)?;
    let levels: Vec<usize> = logs
        .iter()
        .flat_map(|l| l.keys().copied())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let lines: Vec<Vec<Vec<(f64, f64)>>> = levels
        .iter()
        .map(|level| {
            logs.iter()
                .map(|log| prepare(log, *level, &metric, opts))
                .collect()
        })
        .collect();
    let labels: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
    draw(out_png, opts, &metric, &levels, &labels, &lines).map_err(|source| TrainError::Plot {
        path: out_png.to_path_buf(),
        source,
    })?;
    Ok(metric)
}

/// `wanted` if any run has it, else the alphabetically first component of any run.
fn choose_metric(logs: &[LevelSeries], wanted: &str) -> Option<String> {
    let components = || logs.iter().flat_map(|l| l.values()).flat_map(|m| m.keys());
    if components().any(|k| k == wanted) {
        return Some(wanted.to_string());
    }
    components().min().cloned()
}

/// One run's points for one panel: smoothed, sorted by step, log10 of the value when `log_y`.
fn prepare(log: &LevelSeries, level: usize, metric: &str, opts: &PlotOptions) -> Vec<(f64, f64)> {
    let Some(raw) = log.get(&level).and_then(|m| m.get(metric)) else {
        return Vec::new();
    };
    let mut raw = raw.clone();
    raw.sort_by(|a, b| a.0.total_cmp(&b.0));
    let window = opts.smooth.max(1);
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(raw.len());
    for (i, &(step, v)) in raw.iter().enumerate() {
        sum += v;
        if i >= window {
            sum -= raw[i - window].1;
        }
        let avg = sum / (i + 1).min(window) as f64;
        if !opts.log_y {
            out.push((step, avg));
        } else if avg > 0.0 {
            out.push((step, avg.log10()));
        }
    }
    out
}

/// Registers the first readable font of [`FONT_PATHS`] with plotters, once; false if none.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            let Ok(bytes) = std::fs::read(p) else {
                return false;
            };
            // plotters keeps fonts for the whole process; leaking the bytes once is the price.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn draw(
    out: &Path,
    opts: &PlotOptions,
    metric: &str,
    levels: &[usize],
    labels: &[&str],
    lines: &[Vec<Vec<(f64, f64)>>],
) -> DrawResult {
    let text = font_available();
    let root = BitMapBackend::new(out, (opts.width, opts.height)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, levels.len().max(1)));
    for ((panel, level), runs) in panels.iter().zip(levels).zip(lines) {
        let title = format!(
            "level {level}: {metric}{}",
            if opts.log_y { " (log)" } else { "" }
        );
        draw_panel(
            panel,
            text.then_some(title.as_str()),
            labels,
            runs,
            opts.log_y,
        )?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: Option<&str>,
    labels: &[&str],
    runs: &[Vec<(f64, f64)>],
    log_y: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (xr, yr) = bounds(runs);
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if let Some(title) = title {
        builder
            .caption(title, ("sans-serif", 18))
            .x_label_area_size(32)
            .y_label_area_size(56);
    }
    let mut chart = builder.build_cartesian_2d(xr.clone(), yr.clone())?;
    if title.is_some() {
        let fmt_y = move |v: &f64| {
            if log_y {
                format!("{:.3}", 10f64.powf(*v))
            } else {
                format!("{v:.3}")
            }
        };
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&fmt_y)
            .label_style(("sans-serif", 13))
            .draw()?;
    } else {
        chart.plotting_area().draw(&Rectangle::new(
            [(xr.start, yr.start), (xr.end, yr.end)],
            BLACK,
        ))?;
    }
    for (k, points) in runs.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let series = chart.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))?;
        if let Some(label) = labels.get(k).filter(|_| title.is_some()) {
            series.label(*label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        }
    }
    if title.is_some() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

/// The x and y ranges covering every point, widened when empty or flat.
fn bounds(runs: &[Vec<(f64, f64)>]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let points = || runs.iter().flatten();
    let fold = |f: fn(&(f64, f64)) -> f64| {
        points()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let widen = |(lo, hi): (f64, f64), pad: f64| {
        if !lo.is_finite() {
            return 0.0..1.0;
        }
        let span = (hi - lo).max(1e-9);
        (lo - pad * span)..(hi + pad * span + if hi > lo { 0.0 } else { 1.0 })
    };
    (widen(fold(|p| p.0), 0.0), widen(fold(|p| p.1), 0.05))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_keys_name_level_and_component() {
        assert_eq!(parse_loss_key("loss.l0"), Some((0, "total".into())));
        assert_eq!(parse_loss_key("loss_l12"), Some((12, "total".into())));
        assert_eq!(
            parse_loss_key("loss.level2.perceptual"),
            Some((2, "perceptual".into()))
        );
        assert_eq!(parse_loss_key("loss.l1.l1"), Some((1, "l1".into())));
        assert_eq!(parse_loss_key("loss"), None);
        assert_eq!(parse_loss_key("loss.total"), None);
    }

    #[test]
    fn both_log_layouts_are_read() {
        let rec: Value = serde_json::from_str(
            r#"{"step": 3, "lr": 1e-4, "loss": {"l0": 0.5, "l1": {"perceptual": 0.25}}, "levels": [{"l1": 0.1, "total": 0.9}]}"#,
        )
        .unwrap();
        let mut got = level_values(&rec);
        got.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let want = vec![
            (0, "l1".to_string(), 0.1),
            (0, "total".into(), 0.5),
            (0, "total".into(), 0.9),
            (1, "perceptual".into(), 0.25),
        ];
        assert_eq!(got, want);
    }

    /// Writes a log in the trainer's layout: `levels[k].total` decaying, one record per step.
    fn synthetic_log(dir: &Path, name: &str, scale: f64) -> PathBuf {
        let path = dir.join(name);
        let lines: Vec<String> = (1..=50)
            .map(|step| {
                let levels: Vec<Value> = (0..3)
                    .map(|l| serde_json::json!({"l1": 0.1, "total": scale * (1.0 + l as f64) / step as f64, "usage": 7}))
                    .collect();
                serde_json::json!({"step": step, "lr": 1e-4, "loss": 1.0, "levels": levels}).to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    }

    #[test]
    fn plot_of_a_synthetic_log_is_a_png_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            (
                "pooling".to_string(),
                synthetic_log(dir.path(), "a.jsonl", 1.0),
            ),
            (
                "sampling".to_string(),
                synthetic_log(dir.path(), "b.jsonl", 2.0),
            ),
        ];
        let out = dir.path().join("losses.png");
        let opts = PlotOptions {
            width: 900,
            height: 300,
            smooth: 5,
            ..PlotOptions::default()
        };
        assert_eq!(plot_losses(&runs, &out, &opts).unwrap(), "total");
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (900, 300));
        // The first run's colour must appear: the lines were drawn, not just the background.
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
    }

    #[test]
    fn unusable_logs_give_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"step\": 1}\n\nnot json\n").unwrap();
        let out = dir.path().join("x.png");
        let runs = vec![("bad".to_string(), bad.clone())];
        let err = plot_losses(&runs, &out, &PlotOptions::default()).unwrap_err();
        assert!(matches!(err, TrainError::LogParse { line: 3, .. }), "{err}");

        std::fs::write(&bad, "{\"step\": 1, \"lr\": 0.1}\n").unwrap();
        let err = plot_losses(&runs, &out, &PlotOptions::default()).unwrap_err();
        assert!(matches!(err, TrainError::NoLossData { .. }), "{err}");
    }
}
