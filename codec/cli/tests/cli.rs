//! The `hvq` binary, run as a user would, with `--model` pointing at tiny random weights.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{fails_with, ok, save_png, stderr, tiny_weights, write_tiny_model};
use hvq_spec::StoreDtype;

/// A temporary folder with a tiny model file and a few images.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path());
        std::fs::write(
            dir.path().join("other.safetensors"),
            tiny_weights(2).to_safetensors(StoreDtype::F32),
        )
        .unwrap();
        save_png(&dir.path().join("photo.png"), 37, 29);
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `hvq --backend cpu --model model.safetensors ARGS` in the fixture folder.
    fn hvq(&self, args: &[&str]) -> Output {
        self.hvq_with_model("model.safetensors", args)
    }

    fn hvq_with_model(&self, model: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hvq"))
            .current_dir(self.dir.path())
            .args(["--backend", "cpu", "--model", model])
            .args(args)
            .output()
            .expect("the hvq binary runs")
    }

    /// Encodes photo.png to photo.hvq.
    fn encoded(&self) -> PathBuf {
        ok(&self.hvq(&["encode", "photo.png", "-o", "photo.hvq"]));
        self.path("photo.hvq")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn encode_then_decode_writes_an_image_of_the_original_size() {
    let f = Fixture::new();
    f.encoded();
    ok(&f.hvq(&["decode", "photo.hvq", "-o", "back.png"]));
    let img = image::open(f.path("back.png")).unwrap();
    assert_eq!((img.width(), img.height()), (37, 29));
    ok(&f.hvq(&["decode", "photo.hvq", "-o", "thumb.png", "--level", "2"]));
    assert!(
        stderr(&f.hvq(&["decode", "photo.hvq", "-o", "thumb.bmp", "--level", "2"]))
            .contains("level 2")
    );
}

#[test]
fn encode_with_chosen_levels_stores_only_those() {
    let f = Fixture::new();
    ok(&f.hvq(&["encode", "photo.png", "-o", "coarse.hvq", "--levels", "1,2"]));
    let info = stdout(&f.hvq(&["info", "coarse.hvq"]));
    assert!(
        info.contains("10×8") && info.contains("5×4") && !info.contains("20×16"),
        "{info}"
    );
    fails_with(
        &f.hvq(&["decode", "coarse.hvq", "-o", "x.png", "--level", "0"]),
        "level 0 is not available",
    );
}

#[test]
fn info_lists_levels_sizes_and_fingerprint() {
    let f = Fixture::new();
    f.encoded();
    let out = f.hvq(&["info", "photo.hvq"]);
    ok(&out);
    let text = stdout(&out);
    let fp = hvq_spec::fingerprint_hex(&tiny_weights(1).fingerprint());
    assert!(text.contains("37×29") && text.contains(&fp), "{text}");
    // Grids of 40×32 padded pixels at strides 8, 4, 2, coarsest first.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.contains('×') && l.trim_start().starts_with(char::is_numeric))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[0].contains("5×4") && rows[2].contains("20×16"),
        "{text}"
    );
    // Each chunk's coding: the coarsest has no parent in the file, so it is plain.
    assert!(
        text.contains("coding") && rows[0].ends_with("plain"),
        "{text}"
    );
    assert!(
        rows.iter()
            .all(|r| r.ends_with("plain") || r.contains("parent (")),
        "{text}"
    );
    assert!(text.contains("matches"), "{text}");
}

#[test]
fn tokens_of_an_image_and_of_its_file_agree() {
    let f = Fixture::new();
    f.encoded();
    let from_image: serde_json::Value =
        serde_json::from_slice(&f.hvq(&["tokens", "photo.png"]).stdout).unwrap();
    let from_file: serde_json::Value =
        serde_json::from_slice(&f.hvq(&["tokens", "photo.hvq"]).stdout).unwrap();
    assert_eq!(from_image, from_file);
    let level0 = &from_image["levels"][0];
    assert_eq!(
        (
            level0["level"].as_u64(),
            level0["width"].as_u64(),
            level0["height"].as_u64()
        ),
        (Some(0), Some(20), Some(16))
    );
    assert_eq!(level0["tokens"].as_array().unwrap().len(), 16);
}

#[test]
fn tokens_as_npy_have_a_numpy_header_and_grid_shape() {
    let f = Fixture::new();
    ok(&f.hvq(&[
        "tokens",
        "photo.png",
        "--level",
        "1",
        "--format",
        "npy",
        "-o",
        "t.npy",
    ]));
    let bytes = std::fs::read(f.path("t.npy")).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<u2'") && header.contains("'shape': (8, 10)"),
        "{header}"
    );
    assert_eq!(bytes.len(), 10 + header_len + 8 * 10 * 2);
}

#[test]
fn tokenize_dir_writes_shards_and_resumes() {
    let f = Fixture::new();
    let data = f.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    for (i, (w, h)) in [(16, 16), (9, 7), (20, 12), (8, 8), (33, 5)]
        .into_iter()
        .enumerate()
    {
        let dir = if i % 2 == 0 {
            data.clone()
        } else {
            data.join("sub")
        };
        save_png(&dir.join(format!("img{i}.png")), w, h);
    }
    std::fs::write(data.join("notes.txt"), "not an image, not scanned").unwrap();
    let run = || {
        f.hvq(&[
            "tokenize-dir",
            "data",
            "-o",
            "tok",
            "--shard-size",
            "2",
            "--levels",
            "0,2",
            "-j",
            "2",
        ])
    };
    let first = run();
    ok(&first);
    let out = f.path("tok");
    for shard in 0..3 {
        assert!(
            out.join(format!("shard-{shard:05}/index.jsonl")).is_file(),
            "shard {shard}"
        );
    }
    let index = std::fs::read_to_string(out.join("shard-00000/index.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = index
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["file"], "img0.png");
    // The level-0 array holds both images' grids back to back: 8×8 + 12×8 tokens, u16 each.
    let npy = std::fs::read(out.join("shard-00000/level0.npy")).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert_eq!(npy.len() - 10 - header_len, (64 + 96) * 2);
    assert_eq!(lines[1]["levels"][0]["offset"], 64);

    let second = run();
    ok(&second);
    assert!(
        stderr(&second).contains("skipping 3 complete shard(s)"),
        "{}",
        stderr(&second)
    );
    std::fs::remove_dir_all(out.join("shard-00001")).unwrap();
    let third = run();
    ok(&third);
    assert!(
        stderr(&third).contains("skipping 2 complete shard(s)"),
        "{}",
        stderr(&third)
    );
    assert!(out.join("shard-00001/level2.npy").is_file());
}

#[test]
fn tokenize_dir_refuses_an_output_made_with_other_settings() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("data")).unwrap();
    save_png(&f.path("data/a.png"), 8, 8);
    ok(&f.hvq(&["tokenize-dir", "data", "-o", "tok"]));
    fails_with(
        &f.hvq(&["tokenize-dir", "data", "-o", "tok", "--shard-size", "5"]),
        "other settings",
    );
}

#[test]
fn tokenize_dir_records_unreadable_images_and_goes_on() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("data")).unwrap();
    save_png(&f.path("data/a.png"), 8, 8);
    std::fs::write(f.path("data/b.png"), b"not a png").unwrap();
    let out = f.hvq(&["tokenize-dir", "data", "-o", "tok"]);
    ok(&out);
    assert!(
        stderr(&out).contains("skipping `b.png`"),
        "{}",
        stderr(&out)
    );
    let index = std::fs::read_to_string(f.path("tok/shard-00000/index.jsonl")).unwrap();
    assert!(
        index.lines().nth(1).unwrap().contains("\"error\""),
        "{index}"
    );
}

#[test]
fn a_file_of_another_model_is_refused_with_its_reason() {
    let f = Fixture::new();
    f.encoded();
    fails_with(
        &f.hvq_with_model("other.safetensors", &["decode", "photo.hvq", "-o", "x.png"]),
        "encoded with model",
    );
}

#[test]
fn a_truncated_file_decodes_its_best_complete_level() {
    let f = Fixture::new();
    let bytes = std::fs::read(f.encoded()).unwrap();
    // Cut one byte off: the finest chunk is incomplete, the two coarser ones decode.
    std::fs::write(f.path("cut.hvq"), &bytes[..bytes.len() - 1]).unwrap();
    let out = f.hvq(&["decode", "cut.hvq", "-o", "x.png"]);
    ok(&out);
    assert!(
        stderr(&out).contains("truncated") && stderr(&out).contains("level 1"),
        "{}",
        stderr(&out)
    );
    std::fs::write(f.path("stub.hvq"), &bytes[..40]).unwrap();
    fails_with(&f.hvq(&["decode", "stub.hvq", "-o", "x.png"]), "truncated");
}

#[test]
fn a_corrupt_chunk_is_reported() {
    let f = Fixture::new();
    let mut bytes = std::fs::read(f.encoded()).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(f.path("bad.hvq"), &bytes).unwrap();
    fails_with(
        &f.hvq(&["decode", "bad.hvq", "-o", "x.png"]),
        "checksum mismatch",
    );
}

#[test]
fn an_unsupported_version_is_reported() {
    let f = Fixture::new();
    let mut bytes = std::fs::read(f.encoded()).unwrap();
    bytes[8] = 42;
    std::fs::write(f.path("v42.hvq"), &bytes).unwrap();
    fails_with(
        &f.hvq(&["decode", "v42.hvq", "-o", "x.png"]),
        "unsupported .hvq version 42",
    );
    fails_with(&f.hvq(&["info", "v42.hvq"]), "unsupported .hvq version 42");
}

#[test]
fn a_non_image_input_is_reported() {
    let f = Fixture::new();
    std::fs::write(f.path("notes.txt"), "hello").unwrap();
    fails_with(
        &f.hvq(&["encode", "notes.txt", "-o", "x.hvq"]),
        "not a usable image",
    );
    fails_with(
        &f.hvq(&["decode", "notes.txt", "-o", "x.png"]),
        "not an .hvq file",
    );
}

#[test]
fn a_missing_file_is_reported() {
    let f = Fixture::new();
    fails_with(
        &f.hvq(&["encode", "nowhere.png", "-o", "x.hvq"]),
        "cannot read `nowhere.png`",
    );
    fails_with(
        &f.hvq_with_model(
            "nowhere.safetensors",
            &["encode", "photo.png", "-o", "x.hvq"],
        ),
        "cannot read",
    );
}

#[test]
fn a_bad_model_file_is_reported() {
    let f = Fixture::new();
    std::fs::write(
        f.path("bad.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!",
    )
    .unwrap();
    fails_with(
        &f.hvq_with_model("bad.safetensors", &["encode", "photo.png", "-o", "x.hvq"]),
        "cannot load model",
    );
}

#[test]
fn an_unknown_flag_or_backend_is_a_usage_error() {
    let f = Fixture::new();
    let out = f.hvq(&["encode", "photo.png", "-o", "x.hvq", "--frobnicate"]);
    fails_with(&out, "--frobnicate");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_hvq"))
        .args(["--backend", "tpu", "info", "x.hvq"])
        .output()
        .unwrap();
    fails_with(&out, "invalid value 'tpu'");
}

#[test]
fn help_explains_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_hvq"))
        .arg("--help")
        .output()
        .unwrap();
    ok(&out);
    let text = stdout(&out);
    for word in [
        "encode",
        "decode",
        "info",
        "tokens",
        "tokenize-dir",
        "--model",
        "--backend",
    ] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
}

#[test]
fn auto_backend_falls_back_or_uses_a_gpu() {
    let f = Fixture::new();
    let out = Command::new(env!("CARGO_BIN_EXE_hvq"))
        .current_dir(f.dir.path())
        .args([
            "-v",
            "--model",
            "model.safetensors",
            "--backend",
            "auto",
            "encode",
            "photo.png",
            "-o",
            "a.hvq",
        ])
        .output()
        .unwrap();
    ok(&out);
    assert!(stderr(&out).contains("backend"), "{}", stderr(&out));
}

#[test]
fn rd_lambda_makes_smaller_files_of_the_default_model_and_bad_values_are_refused() {
    let f = Fixture::new();
    for bad in ["-1", "nan", "inf", "x"] {
        let arg = format!("--rd-lambda={bad}");
        fails_with(
            &f.hvq(&["encode", "photo.png", "-o", "x.hvq", &arg]),
            "--rd-lambda",
        );
        assert!(!f.path("x.hvq").exists(), "{bad}: nothing is written");
    }
    // hvq-cli builds hvq-codec with the embedded model (a committed file): its absence is a failure.
    assert!(
        hvq_codec::has_default_model(),
        "codec/models/default.safetensors was not embedded"
    );
    save_png(&f.path("big.png"), 128, 96);
    // The embedded model (no --model), whose priors carry a context model.
    let encode = |out: &str, lambda: &str| {
        let run = Command::new(env!("CARGO_BIN_EXE_hvq"))
            .current_dir(f.dir.path())
            .args([
                "--backend",
                "cpu",
                "encode",
                "big.png",
                "-o",
                out,
                "--rd-lambda",
                lambda,
            ])
            .output()
            .expect("the hvq binary runs");
        ok(&run);
        std::fs::metadata(f.path(out)).unwrap().len()
    };
    let (plain, rd) = (encode("plain.hvq", "0"), encode("rd.hvq", "0.3"));
    assert!(rd < plain, "--rd-lambda 0.3: {rd} bytes, plain {plain}");
    let decode = Command::new(env!("CARGO_BIN_EXE_hvq"))
        .current_dir(f.dir.path())
        .args(["--backend", "cpu", "decode", "rd.hvq", "-o", "rd.png"])
        .output()
        .unwrap();
    ok(&decode);
    let img = image::open(f.path("rd.png")).unwrap();
    assert_eq!((img.width(), img.height()), (128, 96));
}
