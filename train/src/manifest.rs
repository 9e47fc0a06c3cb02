//! A cached file list for [`crate::data::Dataset::open`], so that a start at ImageNet scale
//! (1.28 M files in 1000 folders) does not walk and stat the whole tree every time.
//!
//! # Where it lives
//!
//! The manifest is kept in a cache folder, never in the data folder: a data set is often
//! shared, read-only or someone else's, and a trainer must not write into it. The cache folder
//! is [`crate::data::DataConfig::manifest_dir`] when set, else `$HVQ_CACHE_DIR/manifests`, else
//! `$XDG_CACHE_HOME/hvq/manifests`, else `$HOME/.cache/hvq/manifests` (see [`default_dir`]);
//! when none of these resolves nothing is cached. The file in it is named after the data folder:
//! `<FNV-1a-64 of the canonical absolute path, 16 hex digits>.json`. The manifest also records
//! that canonical path, so a hash collision, or a folder moved or replaced at another path, is
//! detected rather than followed. A data folder whose canonical path is not UTF-8 is not cached.
//!
//! # When it is trusted
//!
//! The manifest holds the sorted relative paths the walk found, the extensions they were
//! matched against, and the modification time of the data folder itself and of every
//! sub-folder. It is trusted when:
//!
//! - its format, root path and extensions are those asked for;
//! - the data folder and every recorded sub-folder still have their recorded modification
//!   times. A folder's mtime changes whenever an entry is added to it, removed from it or
//!   renamed in it, which is all that can change the walk below it (a file rewritten in place
//!   keeps its path; the list has only paths). Checking costs one `stat` per folder (1001 for
//!   ImageNet) instead of one per file. (The root can be stamped like the others because the
//!   manifest is not written into it.)
//! - every recorded file stays inside the data folder and has one of the extensions: a
//!   tampered manifest cannot point the loader elsewhere.
//!
//! Otherwise the folder is walked as before and the manifest rewritten. The manifest is only
//! written when the walk saw a settled tree: every folder's mtime (the root's included) is the
//! same after the walk as before it and at least [`SETTLE`] old, so a change that lands in the
//! same timestamp tick as the walk (file systems keep mtimes at 1 ns to 2 s resolution) cannot
//! hide behind an unchanged mtime. It is written to a temporary file in the cache folder and
//! renamed, so a reader never sees half of it. Where the cache folder cannot be created or
//! written, the data folder is simply walked at every start. Every failure here is silent and
//! falls back to the walk: the cache can make a start faster, never different.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Version of the manifest's layout; another value is ignored (and rewritten).
const FORMAT: u32 = 2;

/// How old every folder's mtime must be, at the end of a walk, for the walk to be cached.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

/// What a walk of the data folder found: the input of [`Cache::store`].
#[derive(Debug)]
pub(crate) struct Walk {
    /// Matching files, sorted, as `root.join(relative)`.
    pub files: Vec<PathBuf>,
    /// Every folder below the root (not the root) with its mtime when the walk reached it.
    pub dirs: Vec<(PathBuf, Option<SystemTime>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// Canonical absolute path of the data folder.
    root: String,
    /// The data folder's own mtime, seconds and nanoseconds since the Unix epoch.
    root_mtime: (u64, u32),
    /// Extensions as asked for, normalised by [`normalise`].
    extensions: Vec<String>,
    /// Relative paths of the sub-folders, components joined by `/`, with their mtimes.
    dirs: Vec<DirStamp>,
    /// Relative paths of the matching files in walk (sorted) order, components joined by `/`.
    files: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DirStamp {
    path: String,
    /// Seconds and nanoseconds since the Unix epoch.
    mtime: (u64, u32),
}

/// The cache slot of one data folder, located before the folder is read.
#[derive(Debug)]
pub(crate) struct Cache {
    /// The manifest file in the cache folder.
    file: PathBuf,
    /// Canonical absolute path of the data folder, as recorded in the manifest.
    canonical: String,
    /// The data folder's mtime when located, i.e. before any walk of it.
    root_seen: Option<SystemTime>,
}

/// The default cache folder for manifests, from the environment as read by `var` (see the
/// module docs); `None` when none of the variables gives one. Empty values count as unset, and
/// a relative `XDG_CACHE_HOME` is ignored, as the XDG base directory specification asks.
pub(crate) fn default_dir(var: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("HVQ_CACHE_DIR") {
        return Some(dir.join("manifests"));
    }
    if let Some(dir) = set("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return Some(dir.join("hvq").join("manifests"));
    }
    set("HOME").map(|home| home.join(".cache").join("hvq").join("manifests"))
}

/// FNV-1a-64 (the hash of [`crate::data`]'s validation split), fixed on every platform.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Lower-cased, dot-less, sorted, deduplicated: what the matching actually depends on.
fn normalise(extensions: &[String]) -> Vec<String> {
    let mut v: Vec<String> = extensions
        .iter()
        .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn stamp(t: SystemTime) -> Option<(u64, u32)> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some((d.as_secs(), d.subsec_nanos()))
}

fn dir_mtime(path: &Path) -> Option<SystemTime> {
    // `metadata` follows symbolic links, as the walk does.
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `root`-relative path with `/` between components; `None` if not below `root` or not UTF-8.
pub(crate) fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `root.join` of a stored relative path; `None` for anything that could leave `root`.
pub(crate) fn absolute(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for part in rel.split('/') {
        let mut comps = Path::new(part).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(name)), None) if name == part => path.push(part),
            _ => return None,
        }
    }
    Some(path)
}

/// Temporary-file counter, so that two threads of one process never share a temporary name.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// The cache slot of the data folder `root` in `manifest_dir`, or in [`default_dir`] of the
    /// process environment when `None`. `None` when there is no cache folder, or `root` has no
    /// UTF-8 canonical path: then the folder is only walked.
    ///
    /// Call it before walking `root`: it notes the folder's mtime, which a later
    /// [`Cache::store`] checks is unchanged.
    pub(crate) fn locate(root: &Path, manifest_dir: Option<&Path>) -> Option<Cache> {
        let dir = match manifest_dir {
            Some(dir) => dir.to_path_buf(),
            None => default_dir(&|name| std::env::var_os(name))?,
        };
        let root_seen = dir_mtime(root);
        let canonical = std::fs::canonicalize(root).ok()?.into_os_string();
        let canonical = canonical.into_string().ok()?;
        let file = dir.join(format!("{:016x}.json", fnv1a(canonical.as_bytes())));
        Some(Cache {
            file,
            canonical,
            root_seen,
        })
    }

    /// The manifest file this slot reads and writes.
    #[cfg(test)]
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// The file list recorded for `root` (the folder given to [`Cache::locate`], as spelled
    /// there), if the manifest is there and still describes the folder.
    pub(crate) fn load(
        &self,
        root: &Path,
        extensions: &[String],
        is_image: &dyn Fn(&Path) -> bool,
    ) -> Option<Vec<PathBuf>> {
        let text = std::fs::read(&self.file).ok()?;
        let m: Manifest = serde_json::from_slice(&text).ok()?;
        if m.format != FORMAT
            || m.root != self.canonical
            || m.extensions != normalise(extensions)
            || Some(m.root_mtime) != self.root_seen.and_then(stamp)
        {
            return None;
        }
        for d in &m.dirs {
            if dir_mtime(&absolute(root, &d.path)?).and_then(stamp) != Some(d.mtime) {
                return None;
            }
        }
        m.files
            .iter()
            .map(|f| absolute(root, f).filter(|p| is_image(p)))
            .collect()
    }

    /// Writes the manifest for `walk` of `root` if the walk saw a settled tree (see the module
    /// docs), creating the cache folder if needed. Returns whether it was written; failing to
    /// write is not an error.
    pub(crate) fn store(
        &self,
        root: &Path,
        extensions: &[String],
        walk: &Walk,
        now: SystemTime,
    ) -> bool {
        self.try_store(root, extensions, walk, now).is_some()
    }

    fn try_store(
        &self,
        root: &Path,
        extensions: &[String],
        walk: &Walk,
        now: SystemTime,
    ) -> Option<()> {
        let settled_before = now.checked_sub(SETTLE)?;
        let settled = |path: &Path, seen: Option<SystemTime>| {
            let seen = seen?;
            (seen <= settled_before && dir_mtime(path) == Some(seen)).then_some(seen)
        };
        let root_mtime = stamp(settled(root, self.root_seen)?)?;
        let mut dirs = Vec::with_capacity(walk.dirs.len());
        for (path, seen) in &walk.dirs {
            dirs.push(DirStamp {
                path: relative(root, path)?,
                mtime: stamp(settled(path, *seen)?)?,
            });
        }
        let files = walk
            .files
            .iter()
            .map(|f| relative(root, f))
            .collect::<Option<Vec<_>>>()?;
        let m = Manifest {
            format: FORMAT,
            root: self.canonical.clone(),
            root_mtime,
            extensions: normalise(extensions),
            dirs,
            files,
        };
        let bytes = serde_json::to_vec(&m).ok()?;
        std::fs::create_dir_all(self.file.parent()?).ok()?;
        let mut tmp = self.file.clone().into_os_string();
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        tmp.push(format!(".{}.{seq}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        });
        if written
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataConfig, Dataset};

    /// A data tree and a cache folder of its own, both temporary.
    struct Fixture {
        data: tempfile::TempDir,
        cache: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                data: tree(),
                cache: tempfile::tempdir().unwrap(),
            }
        }

        fn root(&self) -> &Path {
            self.data.path()
        }

        fn cfg(&self) -> DataConfig {
            cfg(self.cache.path())
        }

        fn open(&self) -> Dataset {
            Dataset::open(self.root(), &self.cfg()).unwrap()
        }

        /// The manifest file of the data folder.
        fn manifest(&self) -> PathBuf {
            Cache::locate(self.root(), Some(self.cache.path()))
                .unwrap()
                .file()
                .to_path_buf()
        }
    }

    fn cfg(manifest_dir: &Path) -> DataConfig {
        DataConfig {
            val_count: 2,
            manifest_dir: Some(manifest_dir.to_path_buf()),
            ..DataConfig::default()
        }
    }

    /// A small tree: images at the root, in `a/`, in `a/deep/` and `b/`, upper-case extensions,
    /// and files that are not images.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["a/deep", "b", "empty"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let names = [
            "r1.png",
            "r2.JPG",
            "notes.txt",
            "a/x.png",
            "a/y.jpeg",
            "a/deep/z.PNG",
            "b/w.jpg",
            "b/readme.md",
        ];
        for name in names {
            // Content does not matter: the list is made of paths only.
            std::fs::write(root.join(name), name).unwrap();
        }
        age(root);
        dir
    }

    /// Puts every folder's mtime (the root's included) at one fixed time in 2020, so that the
    /// tree counts as settled, any later change gives a different mtime whatever the file
    /// system's timestamp resolution, and two trees' folders have the same mtimes.
    fn age(root: &Path) {
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        for entry in walkdir::WalkDir::new(root) {
            let entry = entry.unwrap();
            if entry.file_type().is_dir() {
                std::fs::File::open(entry.path())
                    .unwrap()
                    .set_modified(past)
                    .unwrap();
            }
        }
    }

    /// The paths of all of a dataset's images, training then validation.
    fn paths(ds: &Dataset) -> Vec<PathBuf> {
        ds.train()
            .iter()
            .chain(ds.val())
            .map(|i| i.path().to_path_buf())
            .collect()
    }

    fn same_lists(a: &Dataset, b: &Dataset) -> bool {
        a.train() == b.train() && a.val() == b.val()
    }

    /// Every path below `root` with its kind, length and mtime, sorted.
    fn snapshot(root: &Path) -> Vec<(PathBuf, bool, u64, Option<SystemTime>)> {
        let mut v: Vec<_> = walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (e.into_path(), m.is_dir(), m.len(), m.modified().ok())
            })
            .collect();
        v.sort();
        v
    }

    /// Names of the entries of `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_manifest_gives_the_same_dataset_as_a_walk() {
        let fx = Fixture::new();
        let walked = fx.open();
        assert!(!walked.from_manifest());
        assert!(fx.manifest().is_file());
        let cached = fx.open();
        assert!(cached.from_manifest());
        assert!(same_lists(&walked, &cached));
        assert_eq!(walked.train().len() + walked.val().len(), 6);
        // The cache folder holds the manifest and nothing else: no temporary file is left.
        let name = fx
            .manifest()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(names(fx.cache.path()), std::slice::from_ref(&name));
        assert_eq!(name.len(), "0123456789abcdef.json".len(), "{name}");
        // Another spelling of the same folder finds the same manifest and gives its own paths.
        let other = fx.root().join("a").join("..");
        let via = Dataset::open(&other, &fx.cfg()).unwrap();
        assert!(via.from_manifest());
        assert!(via.train().iter().all(|p| p.path().starts_with(&other)));
        assert_eq!(via.train().len(), walked.train().len());
    }

    #[test]
    fn the_data_folder_is_never_written_to() {
        let fx = Fixture::new();
        let before = snapshot(fx.root());
        let first = fx.open();
        assert!(fx.manifest().is_file(), "the manifest was not stored");
        let second = fx.open();
        assert!(!first.from_manifest() && second.from_manifest());
        assert_eq!(snapshot(fx.root()), before);
    }

    #[test]
    fn a_manifest_of_another_folder_at_the_same_cache_path_is_not_used() {
        let (a, b) = (Fixture::new(), tree());
        let b_path = b.path().join("a");
        std::fs::remove_file(b_path.join("x.png")).unwrap();
        age(b.path());
        a.open();
        // A collision, or `a` moved away and `b` put where it was: the slot of `b` holds the
        // manifest of `a`, which would have `b` list a file it lacks.
        let slot = Cache::locate(b.path(), Some(a.cache.path())).unwrap();
        std::fs::copy(a.manifest(), slot.file()).unwrap();
        let got = Dataset::open(b.path(), &a.cfg()).unwrap();
        assert!(!got.from_manifest());
        let mut all: Vec<_> = paths(&got);
        all.sort();
        assert_eq!(all, walk(b.path()));
        // Its own manifest then replaces the stray one.
        assert!(Dataset::open(b.path(), &a.cfg()).unwrap().from_manifest());
        // Control: every folder of `a` and `b` has the same mtime, so only the recorded root
        // told the two apart; with it forged, the stray manifest would be followed.
        let text = std::fs::read_to_string(a.manifest()).unwrap();
        let (a_root, b_root) = (canonical(a.root()), canonical(b.path()));
        assert!(text.contains(&a_root));
        std::fs::write(slot.file(), text.replace(&a_root, &b_root)).unwrap();
        let forged = Dataset::open(b.path(), &a.cfg()).unwrap();
        assert!(forged.from_manifest());
        assert!(
            forged
                .train()
                .iter()
                .chain(forged.val())
                .any(|p| !p.path().exists())
        );
    }

    fn canonical(path: &Path) -> String {
        std::fs::canonicalize(path)
            .unwrap()
            .into_os_string()
            .into_string()
            .unwrap()
    }

    #[test]
    fn a_changed_folder_invalidates_the_manifest() {
        type Change = fn(&Path);
        let changes: [(&str, Change); 8] = [
            ("image added at the root", |r| {
                std::fs::write(r.join("new.png"), "n").unwrap()
            }),
            ("image removed at the root", |r| {
                std::fs::remove_file(r.join("r1.png")).unwrap()
            }),
            ("image added deep down", |r| {
                std::fs::write(r.join("a/deep/new.jpg"), "n").unwrap()
            }),
            ("image renamed", |r| {
                std::fs::rename(r.join("b/w.jpg"), r.join("b/v.jpg")).unwrap()
            }),
            ("folder removed", |r| {
                std::fs::remove_dir_all(r.join("a/deep")).unwrap()
            }),
            ("folder added", |r| {
                std::fs::create_dir(r.join("empty/more")).unwrap()
            }),
            ("folder added at the root", |r| {
                std::fs::create_dir(r.join("c")).unwrap()
            }),
            ("file replaced by a folder at the root", |r| {
                std::fs::remove_file(r.join("notes.txt")).unwrap();
                std::fs::create_dir(r.join("notes.txt")).unwrap();
                std::fs::write(r.join("notes.txt/in.png"), "n").unwrap();
            }),
        ];
        for (what, change) in changes {
            let fx = Fixture::new();
            fx.open();
            assert!(fx.open().from_manifest(), "{what}: cache not used");
            change(fx.root());
            let after = fx.open();
            assert!(!after.from_manifest(), "{what}: stale cache used");
            let mut got: Vec<_> = paths(&after);
            got.sort();
            assert_eq!(got, walk(fx.root()), "{what}");
        }
    }

    /// The image files below `root`, sorted, found independently of the code under test.
    fn walk(root: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| p.is_file())
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                ["png", "jpg", "jpeg"].contains(&ext.to_ascii_lowercase().as_str())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn other_extensions_do_not_use_the_manifest() {
        let fx = Fixture::new();
        fx.open();
        assert!(fx.open().from_manifest());
        let png_only = DataConfig {
            extensions: vec![".PNG".into()],
            ..fx.cfg()
        };
        let ds = Dataset::open(fx.root(), &png_only).unwrap();
        assert!(!ds.from_manifest());
        assert_eq!(ds.train().len() + ds.val().len(), 3);
        // The same extensions spelt otherwise are the same.
        let spelt = DataConfig {
            extensions: vec!["png".into(), "PNG".into()],
            ..fx.cfg()
        };
        assert!(Dataset::open(fx.root(), &spelt).unwrap().from_manifest());
    }

    #[test]
    fn a_cache_folder_that_cannot_be_made_means_a_walk_every_time() {
        let fx = Fixture::new();
        // A cache folder below a regular file cannot be created by any user, root included
        // (permission bits would not stop root).
        let blocker = fx.cache.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let cfg = cfg(&blocker.join("manifests"));
        let first = Dataset::open(fx.root(), &cfg).unwrap();
        let second = Dataset::open(fx.root(), &cfg).unwrap();
        assert!(!first.from_manifest() && !second.from_manifest());
        assert!(same_lists(&first, &second));
        assert_eq!(names(fx.cache.path()), ["file"], "something was written");
        // A folder in the manifest's place makes the final rename fail: nothing is left either.
        std::fs::create_dir_all(fx.manifest()).unwrap();
        let third = fx.open();
        assert!(!third.from_manifest() && same_lists(&first, &third));
        assert_eq!(names(fx.cache.path()).len(), 2, "temporary file left");
    }

    #[test]
    fn a_tree_that_just_changed_is_not_cached() {
        for place in ["a/fresh.png", "fresh.png"] {
            let fx = Fixture::new();
            std::fs::write(fx.root().join(place), "f").unwrap();
            assert!(!fx.open().from_manifest(), "{place}");
            assert!(!fx.open().from_manifest(), "{place}");
            assert!(!fx.manifest().exists(), "{place}");
        }
    }

    #[test]
    fn a_tampered_manifest_is_not_followed_out_of_the_folder() {
        let fx = Fixture::new();
        fx.open();
        let path = fx.manifest();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"a/x.png\""), "{text}");
        for (from, to) in [
            ("\"a/x.png\"", "\"../x.png\""),
            ("\"a/x.png\"", "\"/etc/passwd\""),
            ("\"a/x.png\"", "\"a/x.sh\""),
        ] {
            std::fs::write(&path, text.replace(from, to)).unwrap();
            assert!(!fx.open().from_manifest(), "{to}");
        }
        std::fs::write(&path, "{ not json").unwrap();
        assert!(!fx.open().from_manifest());
        assert!(
            fx.open().from_manifest(),
            "the walk did not repair the manifest"
        );
        for bad in ["", "..", "a/../b", "/etc/passwd", "a//b", "./a"] {
            assert_eq!(absolute(fx.root(), bad), None, "{bad:?}");
        }
        assert_eq!(
            absolute(Path::new("r"), "a/b.png"),
            Some(PathBuf::from("r/a/b.png"))
        );
    }

    #[test]
    fn the_default_cache_folder_follows_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = env(&[
            ("HVQ_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(default_dir(&all), Some(PathBuf::from("/c/manifests")));
        let xdg = env(&[
            ("HVQ_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(default_dir(&xdg), Some(PathBuf::from("/x/hvq/manifests")));
        let home = env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")]);
        assert_eq!(
            default_dir(&home),
            Some(PathBuf::from("/h/.cache/hvq/manifests"))
        );
        assert_eq!(default_dir(&env(&[("HOME", "")])), None);
        assert_eq!(default_dir(&env(&[])), None);
    }

    #[test]
    fn the_file_name_is_the_fnv1a_of_the_canonical_path() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let dir = tempfile::tempdir().unwrap();
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        let slot = Cache::locate(dir.path(), Some(Path::new("/cache"))).unwrap();
        let hash = fnv1a(canonical.to_str().unwrap().as_bytes());
        assert_eq!(slot.file(), Path::new(&format!("/cache/{hash:016x}.json")));
    }
}
