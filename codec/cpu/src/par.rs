//! The one place that knows whether rayon is present: every op parallelises through these
//! helpers, which run sequentially when the `parallel` feature is off (wasm32 without threads).

/// Threads the ops may spread work over.
pub(crate) fn threads() -> usize {
    #[cfg(feature = "parallel")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "parallel"))]
    {
        1
    }
}

/// Runs `f(&mut scratch, i)` for every `i < n`; `init` makes a scratch value per worker
/// (not per item), so buffers are reused across items.
pub(crate) fn for_each_init<S, I, F>(n: usize, init: I, f: F)
where
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) + Sync + Send,
{
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each_init(init, f);
    }
    #[cfg(not(feature = "parallel"))]
    {
        let mut scratch = init();
        (0..n).for_each(|i| f(&mut scratch, i));
    }
}

/// Runs `f(index, chunk)` for every `chunk`-sized piece of `data`.
pub(crate) fn chunks_mut<T: Send, F>(data: &mut [T], chunk: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let chunk = chunk.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
    #[cfg(not(feature = "parallel"))]
    {
        data.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(*mut f32);

/// The same for a `u32` buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMutU32(*mut u32);

// SAFETY: as for `SharedMut`.
unsafe impl Send for SharedMutU32 {}
unsafe impl Sync for SharedMutU32 {}

impl SharedMutU32 {
    /// The pointer.
    pub(crate) fn ptr_u32(self) -> *mut u32 {
        self.0
    }
}

// SAFETY: every user hands each task a disjoint set of indices to write, and the buffer
// outlives the parallel section (it is borrowed mutably for the whole call).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Wraps the start of a buffer.
    pub(crate) fn new(data: &mut [f32]) -> Self {
        SharedMut(data.as_mut_ptr())
    }

    /// Wraps the start of a `u32` buffer.
    pub(crate) fn new_u32(data: &mut [u32]) -> SharedMutU32 {
        SharedMutU32(data.as_mut_ptr())
    }

    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}
