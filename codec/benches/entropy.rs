//! Entropy coding speed of a model's priors (the embedded model's by default), with and without their context model
//! (docs/format.md §4: coding 2 against the best of codings 0 and 1), on the tokens of a real
//! photo. Not a test; timings go to stdout.
//!
//! `cargo bench -p hvq-codec --bench entropy [-- IMAGE [RUNS [WEIGHTS]]]` (default: Kodak's kodim23 from
//! `../shared/data/kodak`, 20 runs, the embedded model). The image is encoded once on the CPU backend;
//! only `write_file` and `read_file` are timed, single-threaded, median of the runs. WEIGHTS is another
//! weight file, e.g. one whose `hvq-priors --context-neighbours` differs.

use std::time::Instant;

use hvq_codec::{Backend, Codec, LevelSelection, Limits, Priors, RgbImage, TokenGrid};
use hvq_format::Header;

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let image_path = args.first().cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/kodak/kodim23.png"
        )
        .to_string()
    });
    let runs: usize = args.get(1).map_or(Ok(20), |s| s.parse())?.max(1);
    let bytes = std::fs::read(&image_path).map_err(|e| format!("{image_path}: {e}"))?;
    let image = RgbImage::decode(&bytes, &Limits::default())?;
    let builder = match args.get(2) {
        Some(path) => {
            Codec::from_weight_bytes(&std::fs::read(path).map_err(|e| format!("{path}: {e}"))?)?
        }
        None => Codec::default_model()?,
    };
    let codec = builder.backend(Backend::Cpu).build()?;
    let t0 = Instant::now();
    let tokens = codec.encode(&image, LevelSelection::All)?;
    println!(
        "{image_path}: {}x{}, tokens in {:.1} s (CPU backend, not part of the timings below)",
        image.width(),
        image.height(),
        t0.elapsed().as_secs_f64()
    );
    let mut grids: Vec<TokenGrid> = tokens.grids.clone();
    grids.sort_by_key(|g| std::cmp::Reverse(g.level));
    let n_tokens: usize = grids.iter().map(|g| g.tokens.len()).sum();

    let with_context = codec.priors().clone();
    if with_context.context().is_none() {
        println!("note: the embedded priors have no context model; both rows are the same coding");
    }
    // The same priors without `hvq.context`: the writer can only choose codings 0 and 1.
    let without = Priors::from_metadata_string(&with_context.to_metadata_string())?;
    println!(
        "{:<22} {:>8} {:>10} {:>12} {:>10} {:>12}",
        "priors", "bytes", "write ms", "Mtokens/s", "read ms", "Mtokens/s"
    );
    for (name, priors) in [("with context model", &with_context), ("without", &without)] {
        let header = Header::new(
            image.width(),
            image.height(),
            codec.fingerprint(),
            codec.config(),
            priors,
        );
        let file = hvq_format::write_file(&header, &grids, priors)?;
        let write = median_ms(runs, || {
            std::hint::black_box(hvq_format::write_file(&header, &grids, priors).unwrap());
        });
        let read = median_ms(runs, || {
            std::hint::black_box(hvq_format::read_file(&file, priors, &Limits::default()).unwrap());
        });
        let rate = |ms: f64| n_tokens as f64 / ms / 1e3;
        println!(
            "{name:<22} {:>8} {write:>10.2} {:>12.2} {read:>10.2} {:>12.2}",
            file.len(),
            rate(write),
            rate(read)
        );
    }
    let neighbours = with_context.context().map_or(0, |c| c.neighbours());
    println!(
        "{n_tokens} tokens in {} levels; context model: {neighbours} neighbours per entry",
        grids.len()
    );
    Ok(())
}
