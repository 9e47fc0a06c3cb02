//! Replays every file under `tests/regressions/` (fuzzer findings and seeds) through both readers.
//!
//! The fuzz targets (`fuzz/`) run with CRC checks off and the priors hash stamped in; this test makes the
//! same input reach the same code with checks on, by stamping the hash and recomputing every checksum.

mod common;

use common::reseal;
use hvq_format::{Limits, Priors, Reader, read_file};

fn fuzz_priors() -> Priors {
    Priors::uniform(3, 64).unwrap()
}

fn fuzz_limits() -> Limits {
    Limits {
        max_pixels: 1 << 20,
        max_file_bytes: 1 << 20,
        max_tokens: 1 << 18,
    }
}

#[test]
fn regression_inputs_give_results_or_typed_errors_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/regressions must exist")
        .map(|e| e.unwrap().path())
        .collect();
    files.retain(|p| p.extension().is_none_or(|e| e != "md"));
    files.sort();
    assert!(
        !files.is_empty(),
        "tests/regressions holds at least the seed file"
    );
    let priors = fuzz_priors();
    for path in files {
        let mut data = std::fs::read(&path).unwrap();
        // Both as found (checksums as they are) and resealed (reaching the decoder like the fuzzer did).
        let raw = data.clone();
        reseal(&mut data, &priors);
        for input in [&raw, &data] {
            let whole = read_file(input, &priors, &fuzz_limits());
            for step in [1, 7, 64] {
                let mut reader = Reader::new(&priors, fuzz_limits());
                let mut pushed = Ok(());
                for piece in input.chunks(step) {
                    if let Err(e) = reader.push(piece) {
                        pushed = Err(e);
                        break;
                    }
                }
                // Pushing in pieces and reading at once agree.
                let streamed = pushed.and_then(|()| reader.finish());
                assert_eq!(streamed, whole, "{}: step {step}", path.display());
            }
        }
    }
}
