//! A thin, checked-by-construction wrapper over the `gemm` crate's raw-pointer entry point.

/// A strided read-only matrix: element `(i, j)` is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// A strided writable matrix.
#[derive(Clone, Copy)]
pub(crate) struct ViewMut {
    pub ptr: *mut f32,
    pub rs: isize,
    pub cs: isize,
}

/// Sizes of one product: `dst[m, n] (+)= lhs[m, k] × rhs[k, n]`.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// `dst = lhs × rhs`, or `dst += lhs × rhs` when `accumulate`.
///
/// Single-threaded: callers parallelise over independent output tiles themselves, which
/// keeps each tile's operands in cache and works unchanged without rayon.
///
/// # Safety
/// Every view must address valid memory for its `dims`, and `dst` must not alias `lhs`/`rhs`.
pub(crate) unsafe fn gemm(dims: Dims, dst: ViewMut, lhs: View, rhs: View, accumulate: bool) {
    if dims.m == 0 || dims.n == 0 {
        return;
    }
    if dims.k == 0 {
        if !accumulate {
            for i in 0..dims.m {
                for j in 0..dims.n {
                    // SAFETY: in bounds of dst by the caller's contract.
                    unsafe { *dst.ptr.offset(i as isize * dst.rs + j as isize * dst.cs) = 0.0 };
                }
            }
        }
        return;
    }
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            dims.m,
            dims.n,
            dims.k,
            dst.ptr,
            dst.cs,
            dst.rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
