//! Parses and validates every WGSL kernel with naga: no GPU needed, so shader errors surface in
//! any CI run instead of only on a machine with an adapter.

use std::path::PathBuf;

use hvq_wgpu::Precision;

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
fn every_wgsl_kernel_parses_and_validates_with_naga_in_both_precisions() {
    let files = shader_files();
    assert!(
        !files.is_empty(),
        "no .wgsl files found in src/shaders: the test would prove nothing"
    );
    let mut failures = Vec::new();
    for path in &files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let body = std::fs::read_to_string(path).expect("readable shader");
        for (precision, caps) in [
            (Precision::F32, naga::valid::Capabilities::default()),
            (
                Precision::F16,
                naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16,
            ),
        ] {
            let Some(source) = hvq_wgpu::shader_source(stem, precision) else {
                failures.push(format!("{stem}.wgsl is not loaded by hvq-wgpu"));
                break;
            };
            // What the device compiles is the prelude plus this very file.
            assert!(
                source.ends_with(&body),
                "{stem}: compiled source is not the file"
            );
            let name = format!("{} ({})", path.display(), precision.name());
            let module = match naga::front::wgsl::parse_str(&source) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(e.emit_to_string_with_path(&source, &name));
                    continue;
                }
            };
            let mut validator =
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            if let Err(e) = validator.validate(&module) {
                failures.push(e.emit_to_string_with_path(&source, &name));
            }
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
fn f16_kernels_keep_the_quantizer_and_statistics_in_f32() {
    // The contract of Precision::F16: only activations and convolution weights are `act`.
    let f32_only = [
        ("codebook_search", "var<storage, read> codebook: array<f32>"),
        ("codebook_gather", "var<storage, read> codebook: array<f32>"),
        (
            "group_norm_stats",
            "var<storage, read_write> norm: array<f32>",
        ),
        ("conv2d", "var<storage, read> bias: array<f32>"),
        ("conv2d", "var<storage, read> norm: array<f32>"),
    ];
    for (kernel, decl) in f32_only {
        let source = hvq_wgpu::shader_source(kernel, Precision::F16).expect("a kernel");
        assert!(source.contains(decl), "{kernel}: expected `{decl}`");
    }
    let search = hvq_wgpu::shader_source("codebook_search", Precision::F16).unwrap();
    assert!(
        search.contains("var best = vec4<f32>"),
        "distances stay f32"
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
