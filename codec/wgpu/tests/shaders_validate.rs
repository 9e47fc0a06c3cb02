//! Parses and validates every WGSL kernel with naga: no GPU needed, so shader errors surface in
//! any CI run instead of only on a machine with an adapter.

use std::path::PathBuf;

fn shader_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/shaders");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_wgsl_kernel_parses_and_validates_with_naga() {
    let files = shader_files();
    assert!(
        !files.is_empty(),
        "no .wgsl files found in src/shaders: the test would prove nothing"
    );
    let mut failures = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).expect("readable shader");
        let name = path.display().to_string();
        let module = match naga::front::wgsl::parse_str(&source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(e.emit_to_string_with_path(&source, &name));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        );
        if let Err(e) = validator.validate(&module) {
            failures.push(e.emit_to_string_with_path(&source, &name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} shader(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_wgsl_kernel_is_registered_in_the_crate() {
    // A shader file that no Rust code loads would be validated here but never tested on a device.
    let registered = hvq_wgpu::shader_names();
    for path in shader_files() {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 file name");
        assert!(
            registered.contains(&stem),
            "{stem}.wgsl is not loaded by hvq-wgpu"
        );
    }
}
