//! The robustness corpus (issue 13): a few hundred bad and unusual inputs, generated here from a
//! fixed seed, run through the `hvq` binary under a memory cap and a deadline.
//!
//! Every case must end with exit status 0, 1 (a reported error) or 2 (a usage error), within its
//! deadline, without a panic, and without writing anything but the output it names: every other
//! file in its folder keeps its bytes, and nothing new appears (no `*.part` or temporary files).
//! Cases whose class has a defined answer also check it (`Want::Ok` / `Want::Error`).
//!
//! The corpus is this file's generators; `HVQ_ROBUSTNESS_KEEP=DIR` writes every case's inputs
//! to DIR for inspection or to seed a fuzzer. A summary per class is printed (`--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{pattern, tiny_weights};
use hvq_codec::{RgbImage, TokenGrid, Tokens};
use hvq_spec::StoreDtype;

/// Address-space cap for each run: the largest case needs well under 0.2 GB; 1 GiB leaves room
/// for thread stacks and allocator arenas while turning an allocation that grows with a crafted
/// header into a failure the runner sees (exit 134, "memory allocation of …").
const MEMORY_CAP_KB: u64 = 1 << 20;
/// Per-case deadline; the slowest cases (a megapixel in 300 tiles) take seconds on 2 cores.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Success (exit 0).
    Ok,
    /// A reported error (exit 1 or 2).
    Error,
    /// Either, as long as the invariants hold.
    Any,
}

struct Case {
    class: &'static str,
    name: String,
    /// Files created in the case's folder before the run.
    files: Vec<(String, Vec<u8>)>,
    /// Symlinks `(link, target)` created before the run.
    links: Vec<(String, String)>,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    /// Files the run may create or replace.
    outputs: Vec<String>,
    want: Want,
}

impl Case {
    fn new(class: &'static str, name: impl Into<String>, args: &[&str], want: Want) -> Self {
        Case {
            class,
            name: name.into(),
            files: Vec::new(),
            links: Vec::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin: None,
            outputs: Vec::new(),
            want,
        }
    }

    fn file(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.files.push((name.to_string(), bytes));
        self
    }

    fn output(mut self, name: &str) -> Self {
        self.outputs.push(name.to_string());
        self
    }
}

/// The tiny model without its attention block: attention is quadratic in a tile's positions,
/// and the corpus is about inputs, not about that model's speed.
fn flat_weights() -> hvq_spec::Weights {
    let config = hvq_spec::ModelConfig {
        mid_attention: false,
        ..hvq_spec::ModelConfig::tiny()
    };
    hvq_spec::random_weights(&config, 1).expect("a valid config")
}

fn flat_codec() -> hvq_codec::Codec {
    hvq_codec::Codec::builder(flat_weights())
        .backend(hvq_codec::Backend::Cpu)
        .build()
        .unwrap()
}

/// Deterministic xorshift, so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn encoded(img: &RgbImage, format: image::ImageFormat) -> Vec<u8> {
    img.encode_as(format).unwrap()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (!(crc & 1)).wrapping_add(1));
        }
    }
    !crc
}

/// A PNG whose IHDR claims `w × h` (with a valid CRC) but holds a 1×1 image's data.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = encoded(&pattern(1, 1), image::ImageFormat::Png);
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A JPEG whose frame header claims `w × h` (at most 65535) but holds a small image's data.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut jpg = encoded(&pattern(16, 16), image::ImageFormat::Jpeg);
    let sof = jpg
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline JPEG has SOF0");
    jpg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpg
}

/// A valid `.hvq` file of `w × h` holding only the coarsest level, all tokens 0: tiny on disk,
/// large to decode.
fn hvq_of_size(w: u32, h: u32) -> Vec<u8> {
    let codec = flat_codec();
    let (gw, gh) = codec.grid_size(2, w, h);
    let tokens = Tokens {
        width: w,
        height: h,
        grids: vec![TokenGrid {
            level: 2,
            width: gw,
            height: gh,
            tokens: vec![0; gw * gh],
        }],
    };
    codec.tokens_to_hvq(&tokens).unwrap()
}

fn image_cases(cases: &mut Vec<Case>, rng: &mut Rng) {
    use image::ImageFormat::*;
    let img = pattern(61, 47);
    for (format, ext, truncation_is_error) in [
        (Png, "png", true),
        (Jpeg, "jpg", true),
        (Gif, "gif", false),
        (Bmp, "bmp", false),
        (WebP, "webp", false),
        (Tiff, "tif", false),
    ] {
        let bytes = encoded(&img, format);
        let intact = Case::new(
            "image-intact",
            ext,
            &["encode", &format!("in.{ext}"), "-o", "o.hvq"],
            Want::Ok,
        )
        .file(&format!("in.{ext}"), bytes.clone())
        .output("o.hvq");
        cases.push(intact);
        for k in 1..8 {
            let cut = bytes.len() * k / 8;
            let want = if truncation_is_error {
                Want::Error
            } else {
                Want::Any
            };
            cases.push(
                Case::new(
                    "image-truncated",
                    format!("{ext}@{cut}"),
                    &["encode", &format!("in.{ext}"), "-o", "o.hvq"],
                    want,
                )
                .file(&format!("in.{ext}"), bytes[..cut].to_vec())
                .output("o.hvq"),
            );
        }
        for k in 0..6 {
            let mut b = bytes.clone();
            let at = rng.below(b.len());
            b[at] ^= 1 << rng.below(8);
            cases.push(
                Case::new(
                    "image-bitflip",
                    format!("{ext}#{k}@{at}"),
                    &["encode", &format!("in.{ext}"), "-o", "o.hvq"],
                    Want::Any,
                )
                .file(&format!("in.{ext}"), b)
                .output("o.hvq"),
            );
        }
    }
    for (w, h) in [
        (100_000, 100_000),
        (1 << 31, 1),
        (9000, 9000),
        (65_535, 65_535),
        (0, 10),
    ] {
        cases.push(
            Case::new(
                "image-header-bomb",
                format!("png {w}×{h}"),
                &["encode", "in.png", "-o", "o.hvq"],
                Want::Error,
            )
            .file("in.png", png_claiming(w, h))
            .output("o.hvq"),
        );
    }
    // Over the pixel limit: refused from the header. Within it but without the data (a 16×16
    // image's scan): whatever the JPEG decoder makes of it, no abort and bounded memory.
    for (w, h, want) in [
        (65_535, 65_535, Want::Error),
        (1200, 1000, Want::Any),
        (3000, 16, Want::Any),
    ] {
        cases.push(
            Case::new(
                "image-header-bomb",
                format!("jpeg {w}×{h}"),
                &["encode", "in.jpg", "-o", "o.hvq"],
                want,
            )
            .file("in.jpg", jpeg_claiming(w, h))
            .output("o.hvq"),
        );
    }
    for (w, h) in [(1, 1), (1, 20_000), (20_000, 1), (3, 4099)] {
        cases.push(
            Case::new(
                "image-aspect",
                format!("{w}×{h}"),
                &["encode", "in.png", "-o", "o.hvq"],
                Want::Ok,
            )
            .file("in.png", encoded(&pattern(w, h), Png))
            .output("o.hvq"),
        );
    }
    // A megapixel in 64-pixel tiles (`run` passes `--tile 64`): about 300 tiles.
    let big = RgbImage::new(
        1024,
        1024,
        (0..1024 * 1024 * 3)
            .map(|i| (i / 3 % 1024 / 4) as u8)
            .collect(),
    )
    .unwrap();
    cases.push(
        Case::new(
            "image-large",
            "png 1024×1024",
            &["encode", "in.png", "-o", "o.hvq"],
            Want::Ok,
        )
        .file("in.png", encoded(&big, Png))
        .output("o.hvq"),
    );
    cases.push(
        Case::new(
            "image-not-an-image",
            "text",
            &["encode", "in.png", "-o", "o.hvq"],
            Want::Error,
        )
        .file("in.png", b"hello".to_vec()),
    );
    cases.push(
        Case::new(
            "image-not-an-image",
            "empty",
            &["encode", "in.png", "-o", "o.hvq"],
            Want::Error,
        )
        .file("in.png", Vec::new()),
    );
}

fn hvq_cases(cases: &mut Vec<Case>, rng: &mut Rng) {
    let codec = flat_codec();
    let file = codec.encode_to_hvq(&pattern(61, 47), &[0, 1, 2]).unwrap();
    let decode = |name: String, class, bytes: Vec<u8>, want| {
        Case::new(class, name, &["decode", "in.hvq", "-o", "o.png"], want)
            .file("in.hvq", bytes)
            .output("o.png")
    };
    for cut in (0..file.len()).step_by(7) {
        cases.push(decode(
            format!("@{cut}"),
            "hvq-truncated",
            file[..cut].to_vec(),
            Want::Any,
        ));
    }
    for k in 0..48 {
        let mut b = file.clone();
        let at = rng.below(b.len());
        b[at] ^= 1 << rng.below(8);
        cases.push(decode(format!("#{k}@{at}"), "hvq-bitflip", b, Want::Error));
    }
    for junk in [1, 19, 20, 64, 1000] {
        let mut b = file.clone();
        b.extend((0..junk).map(|i| (i * 37 % 251) as u8));
        cases.push(decode(format!("+{junk}"), "hvq-junk", b, Want::Any));
    }
    // Crafted valid files: a strip that pads past the limit, and a long thin image that decodes
    // in long tiles.
    cases.push(decode(
        "1×16777216".into(),
        "hvq-crafted-size",
        hvq_of_size(1, 16_777_216),
        Want::Error,
    ));
    cases.push(decode(
        "16×65536".into(),
        "hvq-crafted-size",
        hvq_of_size(16, 65_536),
        Want::Ok,
    ));
    cases.push(decode(
        "1024×1024".into(),
        "hvq-crafted-size",
        hvq_of_size(1024, 1024),
        Want::Ok,
    ));
    let other = hvq_codec::Codec::builder(tiny_weights(2))
        .backend(hvq_codec::Backend::Cpu)
        .build()
        .unwrap()
        .encode_to_hvq(&pattern(20, 20), &[0])
        .unwrap();
    cases.push(decode(
        "another model".into(),
        "hvq-other-model",
        other,
        Want::Error,
    ));
    for args in [["info", "in.hvq"], ["tokens", "in.hvq"]] {
        for cut in [0, 10, 68, file.len() / 2] {
            cases.push(
                Case::new(
                    "hvq-truncated",
                    format!("{} @{cut}", args[0]),
                    &args,
                    Want::Any,
                )
                .file("in.hvq", file[..cut].to_vec()),
            );
        }
    }
}

fn weight_cases(cases: &mut Vec<Case>) {
    let good = flat_weights().to_safetensors(StoreDtype::F32);
    let png = encoded(&pattern(20, 20), image::ImageFormat::Png);
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("text", b"not a model".to_vec()),
        ("half", good[..good.len() / 2].to_vec()),
        ("header only", good[..good.len().min(200)].to_vec()),
        (
            "huge header length",
            [u64::MAX.to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
        ),
    ] {
        cases.push(
            Case::new(
                "weights",
                name,
                &[
                    "--model",
                    "bad.safetensors",
                    "encode",
                    "in.png",
                    "-o",
                    "o.hvq",
                ],
                Want::Error,
            )
            .file("bad.safetensors", bytes)
            .file("in.png", png.clone()),
        );
    }
}

fn cli_cases(cases: &mut Vec<Case>) {
    let png = encoded(&pattern(20, 20), image::ImageFormat::Png);
    let file = flat_codec()
        .encode_to_hvq(&pattern(20, 20), &[0, 1, 2])
        .unwrap();
    let with_inputs = |c: Case| c.file("in.png", png.clone()).file("in.hvq", file.clone());
    for args in [
        &["encode", "missing.png", "-o", "o.hvq"][..],
        &["encode", "in.png"],
        &["encode", "in.png", "-o", "o.hvq", "-l", "9"],
        &["encode", "in.png", "-o", "o.hvq", "--levels", "x"],
        &["encode", "in.png", "-o", "o.hvq", "--tile", "abc"],
        &["encode", ".", "-o", "o.hvq"],
        &["encode", "in.png", "-o", "no/such/dir/o.hvq"],
        &["encode", "in.png", "-o", "."],
        &["decode", "in.hvq", "-o", "o.unknownext"],
        &["decode", "in.png", "-o", "o.png"],
        &["decode", "in.hvq", "-o", "o.png", "--level", "7"],
        &["tokens", "in.hvq", "--level", "5"],
        &["frobnicate"],
        &["--backend", "quantum", "info", "in.hvq"],
        &["tokenize-dir", "missing-dir", "-o", "out"],
    ] {
        cases.push(with_inputs(Case::new(
            "cli",
            args.join(" "),
            args,
            Want::Error,
        )));
    }
    // Odd but valid: any tile size works.
    for tile in ["1", "16", "100000"] {
        cases.push(with_inputs(
            Case::new(
                "cli",
                format!("--tile {tile}"),
                &["--tile", tile, "encode", "in.png", "-o", "o.hvq"],
                Want::Ok,
            )
            .output("o.hvq"),
        ));
    }
}

fn write_cases(cases: &mut Vec<Case>) {
    let png = encoded(&pattern(20, 20), image::ImageFormat::Png);
    // A pre-existing `OUT.part` symlink must not redirect the write into another file.
    let mut trap = Case::new(
        "writes",
        "OUT.part symlink",
        &["encode", "in.png", "-o", "o.hvq"],
        Want::Ok,
    )
    .file("in.png", png.clone())
    .file("victim", b"keep me".to_vec())
    .output("o.hvq");
    trap.links.push(("o.hvq.part".into(), "victim".into()));
    cases.push(trap);
    // Never replace the input.
    cases.push(
        Case::new(
            "writes",
            "output is the input",
            &["encode", "in.png", "-o", "in.png"],
            Want::Error,
        )
        .file("in.png", png.clone()),
    );
    let mut alias = Case::new(
        "writes",
        "output is the input by a link",
        &["encode", "in.png", "-o", "alias.png"],
        Want::Error,
    )
    .file("in.png", png.clone());
    alias.links.push(("alias.png".into(), "in.png".into()));
    cases.push(alias);
    // stdin and stdout.
    let mut stdin = Case::new(
        "stdio",
        "encode - -o -",
        &["encode", "-", "-o", "-"],
        Want::Ok,
    );
    stdin.stdin = Some(png.clone());
    cases.push(stdin);
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
}

fn run(case: &Case, dir: &Path, model: &Path) -> Outcome {
    let start = Instant::now();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {MEMORY_CAP_KB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_hvq"))
        .args(["--backend", "cpu"]);
    if !case.args.iter().any(|a| a == "--model") {
        cmd.arg("--model").arg(model);
    }
    // Small tiles make the megapixel cases run in hundreds of tiles, as a 48-megapixel photo does
    // with the default size (which tests/tiling.rs and the CLI tests exercise).
    if !case.args.iter().any(|a| a == "--tile") {
        cmd.args(["--tile", "64"]);
    }
    let mut child = cmd
        .args(&case.args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(if case.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    if let Some(input) = &case.stdin {
        let mut pipe = child.stdin.take().unwrap();
        let _ = pipe.write_all(input);
    }
    let stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr_pipe }, &mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        code: status.code(),
        stderr: reader.join().unwrap(),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// Every file under `dir` with its bytes (symlinks as their target path).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let value = if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(entry.path()).unwrap().display()).into_bytes()
        } else if meta.is_dir() {
            b"<dir>".to_vec()
        } else {
            std::fs::read(entry.path()).unwrap()
        };
        out.insert(name, value);
    }
    out
}

/// What is wrong with one case's run, if anything.
fn check(
    case: &Case,
    out: &Outcome,
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if out.timed_out {
        problems.push(format!("no answer within {DEADLINE:?}"));
    }
    match out.code {
        None => problems.push("killed by a signal".into()),
        Some(c) if ![0, 1, 2].contains(&c) => problems.push(format!("exit status {c}")),
        _ => {}
    }
    if out.stderr.contains("panicked") || out.stderr.contains("memory allocation of") {
        problems.push(format!("panic or abort: {}", out.stderr.trim()));
    }
    let ok = out.code == Some(0);
    match case.want {
        Want::Ok if !ok => problems.push(format!("expected success: {}", out.stderr.trim())),
        Want::Error if ok => problems.push("expected an error, got success".into()),
        _ => {}
    }
    if !ok && out.stderr.trim().is_empty() {
        problems.push("failed without saying why".into());
    }
    for (name, bytes) in after {
        let allowed = case.outputs.contains(name) && ok;
        match before.get(name) {
            Some(old) if old == bytes => {}
            Some(_) if allowed => {}
            Some(_) => problems.push(format!("changed `{name}`")),
            None if allowed => {}
            None => problems.push(format!("left `{name}` behind")),
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        problems.push(format!("removed `{name}`"));
    }
    problems
}

#[test]
fn the_robustness_corpus_gives_no_panic_abort_hang_or_stray_write() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut cases = Vec::new();
    image_cases(&mut cases, &mut rng);
    hvq_cases(&mut cases, &mut rng);
    weight_cases(&mut cases);
    cli_cases(&mut cases);
    write_cases(&mut cases);

    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model.safetensors");
    std::fs::write(&model, flat_weights().to_safetensors(StoreDtype::F32)).unwrap();
    let keep = std::env::var_os("HVQ_ROBUSTNESS_KEEP").map(std::path::PathBuf::from);
    let mut failures = Vec::new();
    let mut summary: BTreeMap<&str, (usize, usize, usize, Duration)> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let dir = root.path().join(format!("case-{i:04}"));
        std::fs::create_dir(&dir).unwrap();
        for (name, bytes) in &case.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        for (link, target) in &case.links {
            std::os::unix::fs::symlink(target, dir.join(link)).unwrap();
        }
        if let Some(keep) = &keep {
            let k = keep.join(format!("{i:04}-{}", case.class));
            std::fs::create_dir_all(&k).unwrap();
            for (name, bytes) in &case.files {
                std::fs::write(k.join(name), bytes).unwrap();
            }
            std::fs::write(k.join("args.txt"), case.args.join(" ")).unwrap();
        }
        let before = snapshot(&dir);
        let out = run(case, &dir, &model);
        let after = snapshot(&dir);
        let problems = check(case, &out, &before, &after);
        let entry = summary.entry(case.class).or_default();
        entry.0 += 1;
        entry.1 += usize::from(out.code == Some(0));
        entry.2 += usize::from(!problems.is_empty());
        entry.3 = entry.3.max(out.elapsed);
        if !problems.is_empty() {
            failures.push(format!(
                "[{}] {} (hvq {}): {}",
                case.class,
                case.name,
                case.args.join(" "),
                problems.join("; ")
            ));
        }
    }
    eprintln!(
        "{:<20} {:>5} {:>5} {:>7} {:>9}",
        "class", "cases", "ok", "failed", "slowest"
    );
    for (class, (n, ok, bad, slowest)) in &summary {
        eprintln!(
            "{class:<20} {n:>5} {ok:>5} {bad:>7} {:>8.2}s",
            slowest.as_secs_f64()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
