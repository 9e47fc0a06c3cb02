//! `checksums.json`: each shard's record of its own files (size and SHA-256), written last into
//! the temporary folder before the rename that publishes the shard, and checked on every resume.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::hex;

/// The name of the record inside a shard folder.
pub const CHECKSUMS: &str = "checksums.json";

/// One file of a shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checksums {
    files: Vec<FileSum>,
}

impl FileSum {
    pub fn of(name: &str, data: &[u8]) -> Self {
        FileSum {
            name: name.into(),
            bytes: data.len() as u64,
            sha256: hex(&Sha256::digest(data)),
        }
    }
}

/// The bytes of `checksums.json` for `files`.
pub fn record(files: Vec<FileSum>) -> serde_json::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(&Checksums { files })?;
    out.push(b'\n');
    Ok(out)
}

/// Checks a published shard: `checksums.json` lists exactly `expected` (the file names a shard of
/// this manifest has), every file has its recorded size (all sizes are checked before any
/// checksum, so a truncated file is found without reading the others), then its SHA-256.
/// `Err` says what is wrong, for a message.
pub fn check(dir: &Path, expected: &[String]) -> Result<(), String> {
    let path = dir.join(CHECKSUMS);
    // The record of a shard with a few files is a few hundred bytes; more is not ours.
    let text = read_small(&path, 1 << 20).map_err(|e| format!("{CHECKSUMS}: {e}"))?;
    let sums: Checksums =
        serde_json::from_slice(&text).map_err(|e| format!("{CHECKSUMS} is damaged ({e})"))?;
    let mut listed: Vec<&str> = sums.files.iter().map(|f| f.name.as_str()).collect();
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    listed.sort_unstable();
    want.sort_unstable();
    if listed != want {
        return Err(format!(
            "{CHECKSUMS} lists {listed:?}, a shard of this output has {want:?}"
        ));
    }
    for f in &sums.files {
        match std::fs::metadata(dir.join(&f.name)) {
            Ok(m) if m.len() == f.bytes => {}
            Ok(m) => {
                return Err(format!(
                    "{} is {} bytes, {} when it was written",
                    f.name,
                    m.len(),
                    f.bytes
                ));
            }
            Err(e) => return Err(format!("{}: {e}", f.name)),
        }
    }
    for f in &sums.files {
        let got = sha256_file(&dir.join(&f.name)).map_err(|e| format!("{}: {e}", f.name))?;
        if got != f.sha256 {
            return Err(format!("{} does not match its SHA-256", f.name));
        }
    }
    Ok(())
}

fn read_small(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(buf)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("index.jsonl", &b"{}\n"[..]),
            ("level0.npy", &[7u8; 100][..]),
        ];
        let mut sums = Vec::new();
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).unwrap();
            sums.push(FileSum::of(name, data));
        }
        std::fs::write(dir.path().join(CHECKSUMS), record(sums).unwrap()).unwrap();
        (dir, files.iter().map(|(n, _)| n.to_string()).collect())
    }

    #[test]
    fn an_intact_shard_passes() {
        let (dir, names) = shard();
        assert_eq!(check(dir.path(), &names), Ok(()));
    }

    #[test]
    fn truncation_deletion_and_flips_are_found() {
        let (dir, names) = shard();
        let npy = dir.path().join("level0.npy");
        std::fs::write(&npy, [7u8; 99]).unwrap();
        assert!(check(dir.path(), &names).unwrap_err().contains("99 bytes"));
        let mut flipped = [7u8; 100];
        flipped[50] = 8;
        std::fs::write(&npy, flipped).unwrap();
        assert!(check(dir.path(), &names).unwrap_err().contains("SHA-256"));
        std::fs::remove_file(&npy).unwrap();
        assert!(
            check(dir.path(), &names)
                .unwrap_err()
                .starts_with("level0.npy")
        );
        std::fs::remove_file(dir.path().join(CHECKSUMS)).unwrap();
        assert!(
            check(dir.path(), &names)
                .unwrap_err()
                .starts_with(CHECKSUMS)
        );
    }

    #[test]
    fn a_record_of_other_files_is_damage() {
        let (dir, mut names) = shard();
        names.push("level1.npy".into());
        assert!(check(dir.path(), &names).unwrap_err().contains("lists"));
    }
}
