//! The `hvq` binary's input and output: safe writes, standard input and output, damaged and
//! unusual images, error messages, flags. Run with a tiny random model on the CPU backend.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ok, pattern, stderr, write_tiny_model};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path());
        let png = pattern(37, 29).encode_as(image::ImageFormat::Png).unwrap();
        std::fs::write(dir.path().join("photo.png"), png).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hvq"));
        c.current_dir(self.dir.path())
            .args(["--backend", "cpu", "--model", "model.safetensors"])
            .args(args);
        c
    }

    fn hvq(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the hvq binary runs")
    }

    /// Runs hvq with `stdin` on standard input.
    fn hvq_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn encoded(&self) -> Vec<u8> {
        ok(&self.hvq(&["encode", "photo.png", "-o", "photo.hvq"]));
        std::fs::read(self.path("photo.hvq")).unwrap()
    }

    /// The names in the fixture folder, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// [`common::fails_with`], and more strictly: exit 1 and a one-line message.
#[track_caller]
fn fails_with(out: &Output, expected: &str) {
    let err = common::fails_with(out, expected);
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
}

fn jpeg_of(image: &hvq_codec::RgbImage) -> Vec<u8> {
    image.encode_as(image::ImageFormat::Jpeg).unwrap()
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

#[cfg(unix)]
#[test]
fn a_symlink_where_the_old_temporary_file_went_is_not_written_through() {
    let f = Fixture::new();
    std::fs::write(f.path("victim.txt"), b"keep me").unwrap();
    std::os::unix::fs::symlink("victim.txt", f.path("photo.hvq.part")).unwrap();
    ok(&f.hvq(&["encode", "photo.png", "-o", "photo.hvq"]));
    assert_eq!(std::fs::read(f.path("victim.txt")).unwrap(), b"keep me");
    let meta = std::fs::symlink_metadata(f.path("photo.hvq")).unwrap();
    assert!(meta.file_type().is_file(), "photo.hvq is not a plain file");
    assert!(hvq_codec::is_hvq(
        &std::fs::read(f.path("photo.hvq")).unwrap()
    ));
}

#[cfg(unix)]
#[test]
fn a_symlink_at_the_output_is_replaced_not_followed() {
    let f = Fixture::new();
    std::fs::write(f.path("victim.txt"), b"keep me").unwrap();
    std::os::unix::fs::symlink("victim.txt", f.path("out.hvq")).unwrap();
    ok(&f.hvq(&["encode", "photo.png", "-o", "out.hvq"]));
    assert_eq!(std::fs::read(f.path("victim.txt")).unwrap(), b"keep me");
    assert!(
        std::fs::symlink_metadata(f.path("out.hvq"))
            .unwrap()
            .file_type()
            .is_file()
    );
}

#[test]
fn a_failed_write_leaves_no_temporary_file_and_the_old_output() {
    let f = Fixture::new();
    // A folder where the output should go: the rename fails after the temporary file exists.
    std::fs::create_dir(f.path("taken.hvq")).unwrap();
    std::fs::write(f.path("taken.hvq/inside"), b"x").unwrap();
    let before = f.listing();
    let out = f.hvq(&["encode", "photo.png", "-o", "taken.hvq"]);
    fails_with(&out, "cannot write `taken.hvq`");
    assert_eq!(f.listing(), before, "a temporary file was left behind");
    fails_with(
        &f.hvq(&["encode", "photo.png", "-o", "no/such/dir/x.hvq"]),
        "cannot write",
    );
    // Success leaves only the output.
    ok(&f.hvq(&["encode", "photo.png", "-o", "new.hvq"]));
    let mut expected = before;
    expected.push("new.hvq".into());
    expected.sort();
    assert_eq!(f.listing(), expected);
}

#[test]
fn the_input_is_never_overwritten() {
    let f = Fixture::new();
    let original = std::fs::read(f.path("photo.png")).unwrap();
    for out in ["photo.png", "./photo.png"] {
        fails_with(
            &f.hvq(&["encode", "photo.png", "-o", out]),
            "refusing to overwrite the input",
        );
    }
    #[cfg(unix)]
    {
        std::fs::hard_link(f.path("photo.png"), f.path("alias.png")).unwrap();
        fails_with(
            &f.hvq(&["encode", "photo.png", "-o", "alias.png"]),
            "refusing to overwrite the input",
        );
    }
    assert_eq!(std::fs::read(f.path("photo.png")).unwrap(), original);
    let hvq = f.encoded();
    fails_with(
        &f.hvq(&["decode", "photo.hvq", "-o", "photo.hvq", "-f", "png"]),
        "refusing to overwrite the input",
    );
    fails_with(
        &f.hvq(&["tokens", "photo.hvq", "-o", "photo.hvq"]),
        "refusing to overwrite the input",
    );
    assert_eq!(std::fs::read(f.path("photo.hvq")).unwrap(), hvq);
}

#[test]
fn dash_means_standard_input_and_output() {
    let f = Fixture::new();
    let file = f.encoded();
    let png = std::fs::read(f.path("photo.png")).unwrap();
    let out = f.hvq_stdin(&["encode", "-", "-o", "-"], &png);
    ok(&out);
    assert_eq!(out.stdout, file, "encode - -o - differs from the file");
    assert!(stderr(&out).contains("standard output: 37×29"));

    let out = f.hvq_stdin(&["decode", "-", "-o", "-"], &file);
    ok(&out);
    let img = image::load_from_memory_with_format(&out.stdout, image::ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), (37, 29));
    let out = f.hvq_stdin(&["decode", "-", "-o", "-", "--format", "jpeg"], &file);
    ok(&out);
    assert!(out.stdout.starts_with(&[0xFF, 0xD8, 0xFF]), "not a JPEG");
    // --format also overrides a file's extension.
    ok(&f.hvq(&["decode", "photo.hvq", "-o", "back.img", "-f", "bmp"]));
    assert!(
        std::fs::read(f.path("back.img"))
            .unwrap()
            .starts_with(b"BM")
    );

    let out = f.hvq_stdin(&["info", "-"], &file);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("37×29"));
    let out = f.hvq_stdin(&["tokens", "-", "-o", "-", "-l", "2"], &file);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["levels"][0]["level"], 2);
    // A file literally named `-` is still reachable as `./-`.
    ok(&f.hvq(&["tokens", "photo.png", "-l", "2", "-o", "./-"]));
    assert!(f.path("-").is_file());
}

#[cfg(unix)]
#[test]
fn a_closed_standard_output_ends_quietly_with_141() {
    let f = Fixture::new();
    f.encoded();
    let mut child = f
        .command(&["decode", "photo.hvq", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first byte is written
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn truncated_jpegs_are_refused_complete_ones_are_not() {
    let f = Fixture::new();
    let full = jpeg_of(&pattern(64, 48));
    let progressive = fixture_bytes("progressive-48x32.jpg");
    let restarts = fixture_bytes("restarts-48x32.jpg");
    let mut trailing = full.clone();
    trailing.extend_from_slice(b"\0\0bytes after the end-of-image marker");
    for (name, bytes) in [
        ("full.jpg", &full),
        ("trailing.jpg", &trailing),
        ("progressive.jpg", &progressive),
        ("restarts.jpg", &restarts),
    ] {
        std::fs::write(f.path(name), bytes).unwrap();
        ok(&f.hvq(&["tokens", name, "-l", "2"]));
    }
    // Cut inside the tables, at the start of the data, in the middle, and just before EOI.
    for (name, bytes) in [("full", &full), ("progressive", &progressive)] {
        for cut in [100, bytes.len() / 2, bytes.len() - 2] {
            let file = format!("{name}-{cut}.jpg");
            std::fs::write(f.path(&file), &bytes[..cut]).unwrap();
            fails_with(
                &f.hvq(&["encode", &file, "-o", "x.hvq"]),
                "the JPEG file is cut short",
            );
        }
    }
    assert!(!f.path("x.hvq").exists());
}

#[test]
fn transparency_is_composited_over_the_background() {
    let f = Fixture::new();
    // Left half transparent (stored colour black), right half opaque red.
    let img = image::RgbaImage::from_fn(16, 8, |x, _| {
        if x < 8 {
            image::Rgba([0, 0, 0, 0])
        } else {
            image::Rgba([255, 0, 0, 255])
        }
    });
    img.save(f.path("alpha.png")).unwrap();
    let opaque = image::RgbImage::from_fn(16, 8, |x, _| {
        image::Rgb(if x < 8 { [0, 255, 0] } else { [255, 0, 0] })
    });
    opaque.save(f.path("green.png")).unwrap();
    let tokens = |args: &[&str]| {
        let out = f.hvq(args);
        ok(&out);
        out.stdout
    };
    let white = tokens(&["tokens", "alpha.png"]);
    assert_eq!(
        white,
        tokens(&["tokens", "alpha.png", "--background", "FFFFFF"])
    );
    assert_eq!(
        tokens(&["tokens", "alpha.png", "--background", "#00ff00"]),
        tokens(&["tokens", "green.png"])
    );
    assert_ne!(white, tokens(&["tokens", "green.png"]));
    let out = f.hvq(&["tokens", "alpha.png", "--background", "white"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("six hex digits"), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&f.hvq(&["encode", "--help"]).stdout).into_owned();
    assert!(
        help.contains("--background") && help.contains("white"),
        "{help}"
    );
}

#[test]
fn no_gpu_probe_noise_on_stderr() {
    let f = Fixture::new();
    for backend in ["cpu", "auto"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hvq"))
            .current_dir(f.dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RUST_LOG")
            .args(["--backend", backend, "--model", "model.safetensors"])
            .args(["tokens", "photo.png", "-l", "2"])
            .output()
            .unwrap();
        ok(&out);
        assert_eq!(stderr(&out), "", "backend {backend} printed to stderr");
    }
}

#[test]
fn dash_l_names_the_levels_in_every_subcommand() {
    let f = Fixture::new();
    ok(&f.hvq(&["encode", "photo.png", "-o", "a.hvq", "-l", "1,2"]));
    ok(&f.hvq(&["encode", "photo.png", "-o", "b.hvq", "--level", "1,2"]));
    assert_eq!(
        std::fs::read(f.path("a.hvq")).unwrap(),
        std::fs::read(f.path("b.hvq")).unwrap()
    );
    ok(&f.hvq(&["decode", "a.hvq", "-o", "a.png", "-l", "2"]));
    ok(&f.hvq(&["decode", "a.hvq", "-o", "b.png", "--levels", "2"]));
    let tokens = |args: &[&str]| {
        let out = f.hvq(args);
        ok(&out);
        out.stdout
    };
    assert_eq!(
        tokens(&["tokens", "a.hvq", "-l", "1"]),
        tokens(&["tokens", "a.hvq", "--levels", "1"])
    );
}

#[test]
fn error_messages_are_one_line_without_repeats_or_internal_names() {
    let f = Fixture::new();
    // A PNG header with bit depth 7: the png crate's error repeats inside the image crate's.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&16u32.to_be_bytes());
    ihdr.extend_from_slice(&16u32.to_be_bytes());
    ihdr.extend_from_slice(&[7, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    std::fs::write(f.path("depth7.png"), &png).unwrap();
    let out = f.hvq(&["encode", "depth7.png", "-o", "x.hvq"]);
    fails_with(&out, "bit depth 7");
    assert_eq!(
        stderr(&out).matches("bit depth 7").count(),
        1,
        "{}",
        stderr(&out)
    );

    // A payload bit flip: a checksum error in words, not a Debug name.
    let mut file = f.encoded();
    file[100] ^= 1;
    std::fs::write(f.path("flip.hvq"), &file).unwrap();
    let out = f.hvq(&["decode", "flip.hvq", "-o", "x.png"]);
    fails_with(&out, "damaged");
    assert!(!stderr(&out).contains("ChunkChecksum"), "{}", stderr(&out));

    // A header claiming 10000 × 10000 pixels: `info` and `decode` quote the same limit.
    let mut big = file[..hvq_format::HEADER_LEN].to_vec();
    big[12..16].copy_from_slice(&10_000u32.to_le_bytes());
    big[16..20].copy_from_slice(&10_000u32.to_le_bytes());
    let crc = crc32(&big[..64]);
    big[64..68].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(f.path("big.hvq"), &big).unwrap();
    let limit = hvq_codec::Limits::default().max_pixels.to_string();
    for args in [
        &["info", "big.hvq"][..],
        &["decode", "big.hvq", "-o", "x.png"],
    ] {
        let out = f.hvq(args);
        fails_with(&out, &limit);
        assert!(!stderr(&out).contains("Pixels"), "{}", stderr(&out));
    }
}

#[test]
fn data_appended_to_a_file_is_ignored_with_a_warning() {
    let f = Fixture::new();
    let file = f.encoded();
    ok(&f.hvq(&["decode", "photo.hvq", "-o", "whole.png"]));
    let whole = std::fs::read(f.path("whole.png")).unwrap();
    for junk in [
        &b"\n"[..],
        &[0u8; 64],
        &[0xAB; 20],
        b"appended by a careless cat of two files",
    ] {
        let mut damaged = file.clone();
        damaged.extend_from_slice(junk);
        std::fs::write(f.path("junk.hvq"), &damaged).unwrap();
        let out = f.hvq(&["decode", "junk.hvq", "-o", "junk.png"]);
        ok(&out);
        let err = stderr(&out);
        assert!(err.contains("warning") && err.contains("level 0"), "{err}");
        assert_eq!(err.matches("warning").count(), 1, "{err}");
        assert_eq!(std::fs::read(f.path("junk.png")).unwrap(), whole);
    }
}

/// CRC32 (IEEE), as PNG and `.hvq` use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
