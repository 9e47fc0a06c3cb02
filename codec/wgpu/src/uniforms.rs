//! The uniform block of every kernel: one `#[repr(C)]` struct per kernel that mirrors the
//! `struct Params` of its `.wgsl` file field by field (same names, same order, same types,
//! padding explicit), so a dispatch uploads `bytemuck::bytes_of(&params)` and never a
//! positional word list. The test at the bottom parses every shader with naga and checks that
//! names, offsets, types and sizes agree.

use crate::shaders::Kernel;

/// A kernel's uniform block: plain data laid out exactly as the kernel's WGSL `Params`.
pub(crate) trait Uniform: bytemuck::Pod {
    /// The kernel whose `Params` this struct mirrors (and whose pipeline it is bound to).
    const KERNEL: Kernel;
    /// `(name, byte offset, type)` of every field in declaration order, padding included (for
    /// the layout test).
    #[cfg(test)]
    const FIELDS: &'static [(&'static str, usize, &'static str)];
}

/// Declares each kernel's struct, its [`Uniform`] impl, a compile-time check that its size is a
/// multiple of 16 bytes (WGSL rounds a uniform struct up to that), and, for the tests, the list
/// of every declared struct.
macro_rules! uniforms {
    ($(
        $(#[$meta:meta])*
        $kernel:ident => $name:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ident ),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
            pub(crate) struct $name {
                $( $(#[$field_meta])* pub(crate) $field: $ty, )*
            }

            impl Uniform for $name {
                const KERNEL: Kernel = Kernel::$kernel;
                #[cfg(test)]
                const FIELDS: &'static [(&'static str, usize, &'static str)] = &[
                    $( (stringify!($field), std::mem::offset_of!($name, $field), stringify!($ty)), )*
                ];
            }

            const _: () = assert!(
                std::mem::size_of::<$name>().is_multiple_of(16),
                concat!(stringify!($name), " is not a multiple of 16 bytes"),
            );
        )*

        /// `(kernel, Rust struct name, size, fields)` of every struct above.
        #[cfg(test)]
        type Layout = (Kernel, &'static str, usize, &'static [(&'static str, usize, &'static str)]);

        #[cfg(test)]
        const LAYOUTS: &[Layout] = &[
            $( (Kernel::$kernel, stringify!($name), std::mem::size_of::<$name>(), <$name as Uniform>::FIELDS), )*
        ];
    };
}

uniforms! {
    /// `conv2d.wgsl`.
    Conv2d => Conv2dParams {
        cin: u32,
        h_in: u32,
        w_in: u32,
        cout: u32,
        h_out: u32,
        w_out: u32,
        stride: u32,
        pad_top: u32,
        pad_left: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }

    /// `group_norm_stats.wgsl`.
    GroupNormStats => GroupNormStatsParams {
        /// Elements per group: `channels_per_group * height * width`.
        count: u32,
        eps: f32,
        channels: u32,
        channels_per_group: u32,
    }

    /// `group_norm_apply.wgsl`.
    GroupNormApply => GroupNormApplyParams {
        channels: u32,
        plane: u32,
        _pad0: u32,
        _pad1: u32,
    }

    /// `add.wgsl`.
    Add => AddParams {
        len: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }

    /// `resample.wgsl`.
    Resample => ResampleParams {
        channels: u32,
        h_in: u32,
        w_in: u32,
        h_out: u32,
        w_out: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }

    /// `channel_affine.wgsl`.
    ChannelAffine => ChannelAffineParams {
        channels: u32,
        plane: u32,
        _pad0: u32,
        _pad1: u32,
    }

    /// `attention.wgsl`.
    Attention => AttentionParams {
        channels: u32,
        positions: u32,
        /// `1 / sqrt(channels)`.
        scale: f32,
        _pad0: u32,
    }

    /// `codebook_search.wgsl`.
    CodebookSearch => CodebookSearchParams {
        dim: u32,
        positions: u32,
        entries: u32,
        /// Entries per split (workgroup y), a multiple of 16.
        span: u32,
    }

    /// `codebook_argmin.wgsl`.
    CodebookArgmin => CodebookArgminParams {
        positions: u32,
        splits: u32,
        _pad0: u32,
        _pad1: u32,
    }

    /// `codebook_gather.wgsl`.
    CodebookGather => CodebookGatherParams {
        dim: u32,
        positions: u32,
        entries: u32,
        _pad0: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `var<uniform>` of a kernel's source: its name, binding, type name and members as
    /// `(name, offset, type)`, and the struct's size, as naga lays them out.
    struct WgslParams {
        binding: Option<(u32, u32)>,
        type_name: Option<String>,
        members: Vec<(String, usize, String)>,
        span: usize,
    }

    fn wgsl_params(kernel: Kernel) -> WgslParams {
        let module = naga::front::wgsl::parse_str(&kernel.source(crate::shaders::Precision::F32))
            .unwrap_or_else(|e| panic!("{}.wgsl does not parse: {e}", kernel.name()));
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::Uniform)
            .map(|(_, g)| g)
            .collect();
        assert_eq!(
            uniforms.len(),
            1,
            "{}.wgsl declares {} uniform variables, the graph binds one",
            kernel.name(),
            uniforms.len()
        );
        let global = uniforms[0];
        let ty = &module.types[global.ty];
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{}.wgsl: the uniform is not a struct", kernel.name());
        };
        let scalar_name = |h: naga::Handle<naga::Type>| match module.types[h].inner {
            naga::TypeInner::Scalar(naga::Scalar::U32) => "u32".to_string(),
            naga::TypeInner::Scalar(naga::Scalar::I32) => "i32".to_string(),
            naga::TypeInner::Scalar(naga::Scalar::F32) => "f32".to_string(),
            ref other => format!("{other:?}"),
        };
        WgslParams {
            binding: global.binding.as_ref().map(|b| (b.group, b.binding)),
            type_name: ty.name.clone(),
            members: members
                .iter()
                .map(|m| {
                    (
                        m.name.clone().unwrap_or_default(),
                        m.offset as usize,
                        scalar_name(m.ty),
                    )
                })
                .collect(),
            span: *span as usize,
        }
    }

    #[test]
    fn every_kernel_has_exactly_one_uniform_struct() {
        for kernel in Kernel::ALL {
            let n = LAYOUTS.iter().filter(|l| l.0 == kernel).count();
            assert_eq!(n, 1, "{} has {n} uniform structs", kernel.name());
        }
    }

    #[test]
    fn rust_uniforms_match_the_wgsl_params_structs() {
        let mut failures = Vec::new();
        for &(kernel, rust_name, size, fields) in LAYOUTS {
            let wgsl = wgsl_params(kernel);
            let file = format!("{}.wgsl", kernel.name());
            if wgsl.binding != Some((0, 0)) {
                failures.push(format!(
                    "{file}: the uniform is at (group, binding) {:?}, the graph binds it at (0, 0)",
                    wgsl.binding
                ));
            }
            if wgsl.type_name.as_deref() != Some("Params") {
                failures.push(format!(
                    "{file}: the uniform's type is {:?}, expected Params",
                    wgsl.type_name
                ));
            }
            let rust: Vec<(String, usize, String)> = fields
                .iter()
                .map(|&(n, o, t)| (n.to_string(), o, t.to_string()))
                .collect();
            if rust != wgsl.members {
                failures.push(format!(
                    "{file}: Params members (name, offset, type) differ\n  WGSL: {:?}\n  {rust_name}: {rust:?}",
                    wgsl.members
                ));
            }
            if size != wgsl.span {
                failures.push(format!(
                    "{file}: Params is {} bytes, {rust_name} is {size}",
                    wgsl.span
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn f32_fields_upload_the_same_bits_as_before() {
        // Before the structs, group_norm_stats uploaded [count, eps.to_bits(), channels,
        // channels_per_group] as u32 words.
        let eps = 1e-6_f32;
        let p = GroupNormStatsParams {
            count: 4096,
            eps,
            channels: 128,
            channels_per_group: 4,
        };
        let words: [u32; 4] = [4096, eps.to_bits(), 128, 4];
        assert_eq!(
            bytemuck::bytes_of(&p),
            bytemuck::cast_slice::<u32, u8>(&words)
        );
    }
}
