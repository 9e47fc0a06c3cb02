//! `manifest.json`: the settings of a tokenize-dir output, its file list and how the list is cut
//! into shards. Schema in the parent module's docs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The `format` tag of manifests this build reads and writes.
pub const FORMAT_TAG: &str = "hvq-tokens-v2";

/// A file's path relative to DIR, as raw bytes with `/` between components.
///
/// On unix these are the file name's bytes exactly (any bytes but `/` and NUL), so names that are
/// not UTF-8 survive the trip through the manifest and are found again by a rerun. Elsewhere only
/// Unicode names are scanned (see [`RelPath::from_components`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Builds the relative path of `rel` (a path below DIR); `None` for a name this platform
    /// cannot record losslessly (a non-Unicode name outside unix).
    pub fn from_components(rel: &Path) -> Option<Self> {
        let mut bytes = Vec::new();
        for (i, c) in rel.components().enumerate() {
            if i > 0 {
                bytes.push(b'/');
            }
            bytes.extend_from_slice(os_bytes(c.as_os_str())?);
        }
        Some(RelPath(bytes))
    }

    /// The file under `dir`.
    pub fn under(&self, dir: &Path) -> PathBuf {
        dir.join(bytes_to_path(&self.0))
    }

    /// The name as text: exact when it is UTF-8, with U+FFFD for the bytes that are not otherwise.
    pub fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The JSON form: `{"file": TEXT}` for a UTF-8 name, `{"file": LOSSY, "file_hex": HEX}` otherwise.
    pub fn entry(&self) -> FileEntry {
        match std::str::from_utf8(&self.0) {
            Ok(s) => FileEntry {
                file: s.to_owned(),
                file_hex: None,
            },
            Err(_) => FileEntry {
                file: self.lossy().into_owned(),
                file_hex: Some(hex(&self.0)),
            },
        }
    }

    /// Reads the JSON form back, refusing names that would leave DIR.
    fn from_entry(e: &FileEntry) -> Result<Self, String> {
        let bytes = match &e.file_hex {
            Some(h) => unhex(h).ok_or_else(|| format!("`file_hex` {h:?} is not hex"))?,
            None => e.file.as_bytes().to_vec(),
        };
        let bad = bytes.is_empty()
            || bytes.contains(&0)
            || bytes
                .split(|&b| b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..");
        if bad {
            return Err(format!(
                "{:?} is not a relative path below the folder",
                e.file
            ));
        }
        Ok(RelPath(bytes))
    }
}

#[cfg(unix)]
fn os_bytes(s: &std::ffi::OsStr) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    Some(s.as_bytes())
}

#[cfg(not(unix))]
fn os_bytes(s: &std::ffi::OsStr) -> Option<&[u8]> {
    s.to_str().map(str::as_bytes)
}

#[cfg(unix)]
fn bytes_to_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
fn bytes_to_path(b: &[u8]) -> PathBuf {
    // Only Unicode names are recorded on this platform, and `from_entry` checked the rest.
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One file of the list, as JSON (also the `file`/`file_hex` fields of an index line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_hex: Option<String>,
}

/// Which run of the file list a shard holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardRange {
    pub first: usize,
    pub count: usize,
}

/// How the codec cut large images into tiles (tokens of a tiled image depend on it), as
/// `hvq_codec::Tiling` says.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TilingRecord {
    pub whole_max_pixels: u64,
    pub tile: u32,
    pub overlap: u32,
}

impl From<&hvq_codec::Tiling> for TilingRecord {
    fn from(t: &hvq_codec::Tiling) -> Self {
        TilingRecord {
            whole_max_pixels: t.whole_max_pixels,
            tile: t.tile,
            overlap: t.overlap,
        }
    }
}

/// Everything besides the file list that decides a shard's bytes: a rerun must match it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The model fingerprint, hex.
    pub fingerprint: String,
    pub levels: Vec<usize>,
    pub tiling: TilingRecord,
    /// What transparent pixels are composited over, hex RRGGBB.
    pub background: String,
    pub shard_size: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestJson {
    format: String,
    fingerprint: String,
    levels: Vec<usize>,
    tiling: TilingRecord,
    background: String,
    shard_size: usize,
    shards: Vec<ShardRange>,
    files: Vec<FileEntry>,
}

/// The manifest in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub settings: Settings,
    pub shards: Vec<ShardRange>,
    pub files: Vec<RelPath>,
}

impl Manifest {
    /// A new output's manifest, without files yet.
    pub fn new(settings: Settings) -> Self {
        Manifest {
            settings,
            shards: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Appends `files` after the existing ones, in new shards of `shard_size`: the existing shards
    /// keep exactly the files they had.
    pub fn append(&mut self, files: Vec<RelPath>) {
        let mut first = self.files.len();
        for chunk in files.chunks(self.settings.shard_size) {
            self.shards.push(ShardRange {
                first,
                count: chunk.len(),
            });
            first += chunk.len();
        }
        self.files.extend(files);
    }

    /// The files of shard `s`.
    pub fn shard_files(&self, s: usize) -> &[RelPath] {
        let r = self.shards[s];
        &self.files[r.first..r.first + r.count]
    }

    pub fn to_json(&self) -> Result<String> {
        let s = &self.settings;
        let json = ManifestJson {
            format: FORMAT_TAG.into(),
            fingerprint: s.fingerprint.clone(),
            levels: s.levels.clone(),
            tiling: s.tiling,
            background: s.background.clone(),
            shard_size: s.shard_size,
            shards: self.shards.clone(),
            files: self.files.iter().map(RelPath::entry).collect(),
        };
        Ok(serde_json::to_string_pretty(&json)?)
    }

    /// Parses and checks a manifest; `path` is for messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("`{}` is not a JSON manifest", path.display()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT_TAG) => {}
            Some(other) => bail!(
                "`{}` is a `{other}` manifest; this hvq reads `{FORMAT_TAG}`: use a new output folder",
                path.display()
            ),
            None => bail!("`{}` is not an hvq manifest", path.display()),
        }
        let json: ManifestJson = serde_json::from_value(value)
            .with_context(|| format!("`{}` is a damaged hvq manifest", path.display()))?;
        let damaged = |why: String| anyhow::anyhow!("`{}` is damaged: {why}", path.display());
        let files = json
            .files
            .iter()
            .enumerate()
            .map(|(i, e)| RelPath::from_entry(e).map_err(|w| damaged(format!("file {i}: {w}"))))
            .collect::<Result<Vec<_>>>()?;
        let mut next = 0;
        for (s, r) in json.shards.iter().enumerate() {
            if r.first != next || r.count == 0 || r.count > json.shard_size {
                return Err(damaged(format!("shard {s} does not follow the one before")));
            }
            next += r.count;
        }
        if next != files.len() || json.shard_size == 0 {
            return Err(damaged(format!(
                "the shards hold {next} files, the list {}",
                files.len()
            )));
        }
        let unique: std::collections::HashSet<&RelPath> = files.iter().collect();
        if unique.len() != files.len() {
            return Err(damaged("a file is listed twice".into()));
        }
        Ok(Manifest {
            settings: Settings {
                fingerprint: json.fingerprint,
                levels: json.levels,
                tiling: json.tiling,
                background: json.background,
                shard_size: json.shard_size,
            },
            shards: json.shards,
            files,
        })
    }

    /// What differs between this manifest's settings and `other`, if anything.
    pub fn settings_differ(&self, other: &Settings) -> Option<String> {
        let s = &self.settings;
        let short = |f: &str| f[..f.len().min(16)].to_string();
        if s.fingerprint != other.fingerprint {
            Some(format!(
                "it was made with model {}…, this run loads {}…",
                short(&s.fingerprint),
                short(&other.fingerprint)
            ))
        } else if s.levels != other.levels {
            Some(format!(
                "it holds levels {:?}, this run asks for {:?}",
                s.levels, other.levels
            ))
        } else if s.tiling != other.tiling {
            Some(format!(
                "it was tiled as {:?}, this run as {:?} (--tile)",
                s.tiling, other.tiling
            ))
        } else if s.background != other.background {
            Some(format!(
                "it has --background {}, this run {}",
                s.background, other.background
            ))
        } else if s.shard_size != other.shard_size {
            Some(format!(
                "it has --shard-size {}, this run asks for {}",
                s.shard_size, other.shard_size
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(b: &[u8]) -> RelPath {
        RelPath(b.to_vec())
    }

    fn settings(shard_size: usize) -> Settings {
        Settings {
            fingerprint: "ab".repeat(32),
            levels: vec![0, 2],
            tiling: (&hvq_codec::Tiling::default()).into(),
            background: "ffffff".into(),
            shard_size,
        }
    }

    #[test]
    fn names_round_trip_through_json_utf8_or_not() {
        let mut m = Manifest::new(settings(2));
        m.append(vec![
            rel(b"a.png"),
            rel(b"caf\xe9.png"),
            rel(b"sub/\xff\xfe.jpg"),
        ]);
        m.append(vec![rel(b"z.png")]);
        let text = m.to_json().unwrap();
        assert!(
            text.contains("\"file_hex\": \"636166e92e706e67\""),
            "{text}"
        );
        let back = Manifest::from_json(&text, Path::new("m.json")).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.shards,
            [
                ShardRange { first: 0, count: 2 },
                ShardRange { first: 2, count: 1 },
                ShardRange { first: 3, count: 1 }
            ]
        );
        assert_eq!(back.shard_files(1), [rel(b"sub/\xff\xfe.jpg")]);
    }

    #[test]
    fn paths_leaving_the_folder_or_bad_shards_are_damage() {
        let mut m = Manifest::new(settings(4));
        m.append(vec![rel(b"a.png")]);
        let good = m.to_json().unwrap();
        for (from, to) in [
            ("\"a.png\"", "\"../a.png\""),
            ("\"a.png\"", "\"/a.png\""),
            ("\"count\": 1", "\"count\": 2"),
            ("\"count\": 1", "\"count\": 0"),
        ] {
            let bad = good.replace(from, to);
            assert_ne!(bad, good);
            let err = Manifest::from_json(&bad, Path::new("m.json")).unwrap_err();
            assert!(format!("{err:#}").contains("damaged"), "{err:#}");
        }
        let v1 = good.replace(FORMAT_TAG, "hvq-tokens-v1");
        let err = Manifest::from_json(&v1, Path::new("m.json")).unwrap_err();
        assert!(err.to_string().contains("new output folder"), "{err}");
    }

    #[test]
    fn every_setting_that_changes_tokens_is_compared() {
        let m = Manifest::new(settings(2));
        assert_eq!(m.settings_differ(&settings(2)), None);
        let mut other = settings(2);
        other.tiling.tile = 256;
        assert!(m.settings_differ(&other).unwrap().contains("--tile"));
        let mut other = settings(2);
        other.background = "000000".into();
        assert!(m.settings_differ(&other).unwrap().contains("--background"));
        assert!(
            m.settings_differ(&settings(3))
                .unwrap()
                .contains("--shard-size")
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 255, 16])).unwrap(), [0, 255, 16]);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }
}
