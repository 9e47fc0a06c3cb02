//! `hvq tokenize-dir` run as a user would (tiny random model): resume checks finished shards,
//! raw file names survive, `--add` appends, bad images are error lines, kills resume exactly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fails_with, ok, save_png, stderr, write_tiny_model};

/// A temporary folder with `model.safetensors` and an image folder `data/`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path());
        std::fs::create_dir(dir.path().join("data")).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn image(&self, name: &str, w: u32, h: u32) {
        let path = self.path("data").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        save_png(&path, w, h);
    }

    fn command(&self, out: &str, extra: &[&str]) -> Command {
        self.command_on("cpu", out, extra)
    }

    /// [`Fixture::command`] on `backend`.
    fn command_on(&self, backend: &str, out: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hvq"));
        c.current_dir(self.dir.path())
            .args(["--backend", backend, "--model", "model.safetensors"])
            .args(["tokenize-dir", "data", "-o", out])
            .args(extra);
        for (flag, value) in [("--shard-size", "2"), ("--levels", "0,2"), ("-j", "2")] {
            if !extra.contains(&flag) {
                c.args([flag, value]);
            }
        }
        c
    }

    /// `hvq tokenize-dir data -o OUT EXTRA`, with `--shard-size 2 --levels 0,2 -j 2` unless
    /// EXTRA sets them.
    fn run(&self, out: &str, extra: &[&str]) -> Output {
        self.command(out, extra)
            .output()
            .expect("the hvq binary runs")
    }

    /// Every file under `out`, by relative path.
    fn tree(&self, out: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        let root = self.path(out);
        let mut files = BTreeMap::new();
        if !root.exists() {
            return files;
        }
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&root).unwrap().to_path_buf();
                    files.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        files
    }
}

fn index(f: &Fixture, out: &str, shard: usize) -> Vec<serde_json::Value> {
    std::fs::read_to_string(f.path(out).join(format!("shard-{shard:05}/index.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Five images in three shards.
fn five_images(f: &Fixture) {
    for (i, (w, h)) in [(16, 16), (9, 7), (20, 12), (8, 8), (33, 5)]
        .into_iter()
        .enumerate()
    {
        f.image(&format!("img{i}.png"), w, h);
    }
}

#[test]
fn resume_encodes_a_damaged_or_incomplete_shard_again() {
    let f = Fixture::new();
    five_images(&f);
    ok(&f.run("tok", &[]));
    let reference = f.tree("tok");
    assert!(reference.contains_key(Path::new("shard-00000/checksums.json")));
    let out = f.path("tok");
    // Deleted, truncated, one bit flipped (same size), and a shard without its record.
    std::fs::remove_file(out.join("shard-00000/level0.npy")).unwrap();
    let npy = out.join("shard-00001/level2.npy");
    let bytes = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &bytes[..bytes.len() - 1]).unwrap();
    let npy = out.join("shard-00002/level0.npy");
    let mut bytes = std::fs::read(&npy).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&npy, &bytes).unwrap();
    let err = ok(&f.run("tok", &[]));
    for (shard, why) in [
        ("shard-00000", "level0.npy"),
        ("shard-00001", "level2.npy is"),
        ("shard-00002", "SHA-256"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(shard) && l.contains("damaged") && l.contains(why)),
            "{shard}: {err}"
        );
    }
    assert!(err.contains("3 written now"), "{err}");
    assert_eq!(f.tree("tok"), reference);

    std::fs::remove_file(out.join("shard-00001/checksums.json")).unwrap();
    let err = ok(&f.run("tok", &[]));
    assert!(err.contains("skipping 2 complete shard(s)"), "{err}");
    assert_eq!(f.tree("tok"), reference);
    // Intact shards are checked and kept; what a killed run leaves behind is removed.
    std::fs::create_dir(out.join("shard-00001.tmp")).unwrap();
    std::fs::write(out.join("shard-00001.tmp/level0.npy"), b"half").unwrap();
    std::fs::write(out.join(".manifest.json.0123456789abcdef.tmp"), b"{").unwrap();
    let err = ok(&f.run("tok", &[]));
    assert!(
        err.contains("skipping 3 complete shard(s)") && !err.contains("damaged"),
        "{err}"
    );
    assert_eq!(f.tree("tok"), reference);
}

#[cfg(unix)]
#[test]
fn non_utf8_names_are_kept_exactly_and_found_again() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    f.image("a.png", 8, 8);
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    save_png(&f.path("data").join(latin1), 9, 9);
    let err = ok(&f.run("tok", &[]));
    assert!(err.contains("0 unreadable"), "{err}");
    let lines = index(&f, "tok", 0);
    assert_eq!(lines[0]["file"], "a.png");
    assert!(lines[0].get("file_hex").is_none());
    assert_eq!(lines[1]["file"], "caf\u{fffd}.png");
    assert_eq!(lines[1]["file_hex"], "636166e92e706e67");
    assert_eq!(
        lines[1]["width"], 9,
        "tokenized, not skipped: {:?}",
        lines[1]
    );
    let manifest = std::fs::read_to_string(f.path("tok/manifest.json")).unwrap();
    assert!(manifest.contains("636166e92e706e67"), "{manifest}");
    // The rerun finds the same two files: nothing new, nothing gone.
    let err = ok(&f.run("tok", &[]));
    assert!(
        err.contains("skipping 1 complete shard(s)") && !err.contains("warning"),
        "{err}"
    );
}

#[test]
fn add_appends_new_images_in_new_shards_and_leaves_the_old_ones() {
    let f = Fixture::new();
    for (i, name) in ["b.png", "d.png", "f.png"].into_iter().enumerate() {
        f.image(name, 8 + i as u32, 8);
    }
    ok(&f.run("tok", &[]));
    let before = f.tree("tok");
    // New files sort before and between the old ones; they still go after them.
    f.image("a.png", 12, 8);
    f.image("sub/c.png", 16, 9);
    f.image("e.png", 7, 7);
    let err = fails_with(&f.run("tok", &[]), "--add");
    assert!(err.contains("3 image(s)"), "{err}");
    assert_eq!(f.tree("tok"), before, "a refused run changes nothing");

    let err = ok(&f.run("tok", &["--add"]));
    assert!(err.contains("3 new image(s) in 2 new shard(s)"), "{err}");
    let after = f.tree("tok");
    for (path, bytes) in &before {
        if path != Path::new("manifest.json") {
            assert_eq!(after.get(path), Some(bytes), "{path:?} changed");
        }
    }
    let names = |s| -> Vec<String> {
        index(&f, "tok", s)
            .iter()
            .map(|l| l["file"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(1), ["f.png"]);
    assert_eq!(names(2), ["a.png", "e.png"]);
    assert_eq!(names(3), ["sub/c.png"]);

    // Nothing new: --add resumes; a plain rerun accepts the grown manifest.
    assert!(ok(&f.run("tok", &["--add"])).contains("no new images"));
    assert!(ok(&f.run("tok", &[])).contains("skipping 4 complete shard(s)"));
    // A removed image is reported; its tokens stay.
    std::fs::remove_file(f.path("data/d.png")).unwrap();
    let err = ok(&f.run("tok", &[]));
    assert!(
        err.contains("1 image(s) of the manifest are no longer under") && err.contains("d.png"),
        "{err}"
    );
    assert_eq!(f.tree("tok"), after);
    // Other settings are still refused, naming the difference.
    fails_with(&f.run("tok", &["--levels", "1"]), "levels [0, 2]");
    fails_with(
        &f.run("tok", &["--background", "000000"]),
        "--background ffffff",
    );
}

/// A PNG signature and IHDR claiming `w × h`, then a stub of compressed data and IEND.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c]);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[test]
fn every_bad_image_is_one_error_line_and_the_run_goes_on() {
    let f = Fixture::new();
    f.image("a_good.png", 8, 8);
    let data = f.path("data");
    let good = std::fs::read(data.join("a_good.png")).unwrap();
    std::fs::write(data.join("b_garbage.png"), b"not a png").unwrap();
    std::fs::write(data.join("c_empty.jpg"), b"").unwrap();
    std::fs::write(data.join("d_cut.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(data.join("e_huge.png"), png_header_only(100_000, 100_000)).unwrap();
    std::fs::write(data.join("f_nodata.png"), png_header_only(64, 64)).unwrap();
    f.image("g_good.png", 9, 9);
    // Not a regular file: never opened (reading it would not end), not listed.
    #[cfg(unix)]
    std::os::unix::fs::symlink("/dev/zero", data.join("h_zero.png")).unwrap();
    let out = f.run("tok", &["--shard-size", "100"]);
    let err = ok(&out);
    let lines = index(&f, "tok", 0);
    assert_eq!(lines.len(), 7);
    for l in &lines {
        let name = l["file"].as_str().unwrap();
        let good = name.contains("good");
        assert_eq!(l.get("error").is_none(), good, "{l}");
        assert_eq!(l.get("levels").is_some(), good, "{l}");
        if !good {
            let warnings = err
                .lines()
                .filter(|w| w.contains(&format!("skipping `{name}`")))
                .count();
            assert_eq!(warnings, 1, "{name}: {err}");
        }
    }
    assert!(
        lines[4]["error"].as_str().unwrap().contains("100000"),
        "the limit error names the size: {}",
        lines[4]
    );
    assert!(err.contains("5 unreadable"), "{err}");
}

#[test]
fn the_memory_budget_changes_scheduling_not_results() {
    let f = Fixture::new();
    five_images(&f);
    ok(&f.run("wide", &["--memory-budget", "1T", "-j", "3"]));
    // Far below any image's estimate: every image runs alone.
    ok(&f.run("narrow", &["--memory-budget", "1k", "-j", "3"]));
    assert_eq!(f.tree("wide"), f.tree("narrow"));
    for bad in ["0", "lots", "2X"] {
        let out = f.run("x", &["--memory-budget", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
}

/// On wgpu the device thread batches the images the workers have ready: the output is the same
/// bytes whether batches hold one image (`-j 1`) or several of mixed sizes (`-j 8`, the four
/// 16×16 ones and the two that pad to 16×16 together), bad images included.
#[test]
fn wgpu_batches_change_scheduling_not_results() {
    let f = Fixture::new();
    five_images(&f);
    for i in 0..4 {
        f.image(&format!("same{i}.png"), 16, 16);
    }
    f.image("pads-to-16.png", 13, 15);
    std::fs::write(f.path("data").join("broken.png"), b"not a png").unwrap();
    let run = |out: &str, j: &str| {
        f.command_on("wgpu", out, &["-j", j])
            .output()
            .expect("the hvq binary runs")
    };
    let one = run("one", "1");
    if !one.status.success() && stderr(&one).contains("adapter") {
        common::skip_without_adapter("wgpu_batches_change_scheduling_not_results", &stderr(&one));
        return;
    }
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    let many = f
        .command_on("wgpu", "many", &["-j", "8"])
        .env("RUST_LOG", "debug")
        .output()
        .expect("the hvq binary runs");
    // How the images were grouped depends on timing; shown, not asserted.
    for line in stderr(&many).lines().filter(|l| l.contains("device batch")) {
        eprintln!("{line}");
    }
    assert_eq!(many.status.code(), Some(0), "{}", stderr(&many));
    assert!(stderr(&many).contains("broken.png"), "{}", stderr(&many));
    assert_eq!(f.tree("one"), f.tree("many"));
    let errors = (0..6)
        .flat_map(|s| index(&f, "many", s))
        .filter(|line| line.get("error").is_some())
        .count();
    assert_eq!(errors, 1);
}

/// Killed with SIGKILL at several moments, then rerun: the output is the same bytes as an
/// uninterrupted run's, and every shard folder present at the kill was complete.
#[cfg(unix)]
#[test]
fn a_killed_run_resumes_to_the_same_bytes() {
    let f = Fixture::new();
    for i in 0..12 {
        f.image(&format!("img{i:02}.png"), 64 + i, 40);
    }
    ok(&f.run("ref", &["--shard-size", "3"]));
    let reference = f.tree("ref");
    // From before the manifest exists to the last shard (a run takes about 200 ms on 2 cores).
    for (attempt, delay_ms) in [5, 60, 150, 250].into_iter().enumerate() {
        let out = format!("kill{attempt}");
        let mut child = f
            .command(&out, &["--shard-size", "3"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // What a reader may use, the manifest and published shards, is never partial.
        for (path, bytes) in f.tree(&out) {
            let top = path
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let published = path == Path::new("manifest.json")
                || (top.starts_with("shard-") && !top.ends_with(".tmp"));
            if published {
                assert_eq!(reference.get(&path), Some(&bytes), "{out}: {path:?}");
            }
        }
        // The rerun completes it and removes the leftovers (temporary shard folders, a
        // manifest's temporary file).
        ok(&f.run(&out, &["--shard-size", "3"]));
        assert_eq!(f.tree(&out), reference, "{out}");
    }
}

/// `--precision f16` runs the wgpu kernels in f16: the run succeeds with the same layout, and
/// it is refused with the CPU backend, which has only f32.
#[test]
fn f16_runs_on_wgpu_and_is_refused_on_the_cpu() {
    let f = Fixture::new();
    five_images(&f);
    let refused = f.run("cpu16", &["--precision", "f16"]);
    fails_with(&refused, "--precision f16 runs on the wgpu backend only");
    assert!(!f.path("cpu16").exists(), "a refused run writes nothing");
    let full = f.command_on("wgpu", "f32", &[]).output().unwrap();
    if !full.status.success() && stderr(&full).contains("adapter") {
        common::skip_without_adapter("f16_runs_on_wgpu_and_is_refused_on_the_cpu", &stderr(&full));
        return;
    }
    ok(&full);
    let half = f
        .command_on("wgpu", "f16", &["--precision", "f16"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = stderr(&half);
    if err.contains("shader-f16") {
        // lavapipe offers it; an adapter without it gets the typed refusal, named.
        common::skip_without_adapter("f16 (no shader-f16 on this adapter)", &err);
        return;
    }
    ok(&half);
    assert!(err.contains("wgpu kernels in f16"), "{err}");
    let (a, b) = (f.tree("f32"), f.tree("f16"));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    let lines = |tree: &BTreeMap<PathBuf, Vec<u8>>| -> usize {
        tree.iter()
            .filter(|(p, _)| p.ends_with("index.jsonl"))
            .map(|(_, bytes)| bytes.iter().filter(|&&c| c == b'\n').count())
            .sum()
    };
    assert_eq!(lines(&a), lines(&b), "the same images in the index");
}
