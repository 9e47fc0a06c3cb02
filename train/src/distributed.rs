//! Data-parallel training, one process per GPU: the launcher's environment ([`World`]), the
//! collective operations the trainer needs ([`Collective`]), an in-process implementation for
//! N ranks in N threads ([`LocalGroup`], used by the tests and deterministic on every rank),
//! and NCCL loaded at run time ([`Nccl`]).
//!
//! A run is launched like a PyTorch one, e.g.
//! `torchrun --no-python --nproc-per-node 8 hvq-train train --config run.toml`: every process
//! reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`, loads and trains
//! on its slice of every global batch ([`shard`], [`crate::data::LoaderSlice`]) and all-reduces
//! the gradients.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use crate::TrainError;

/// Where this process stands in a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank on this machine: the CUDA device this process uses.
    pub local_rank: usize,
    /// `MASTER_ADDR` (empty for a single process).
    pub master_addr: String,
    /// The port on `MASTER_ADDR` where rank 0 hands out the NCCL id: `HVQ_NCCL_PORT`, else
    /// `MASTER_PORT + 1` (torchrun's own store already listens on `MASTER_PORT`); 0 for a
    /// single process.
    pub id_port: u16,
}

impl World {
    /// One process, no collectives.
    pub const SINGLE: World = World {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        master_addr: String::new(),
        id_port: 0,
    };

    /// Reads the launcher's variables through `get` (so tests need not touch the real
    /// environment). An absent `WORLD_SIZE` means a single process.
    ///
    /// Errors: [`TrainError::LaunchEnvMissing`], [`TrainError::LaunchEnvGarbled`],
    /// [`TrainError::LaunchEnvInconsistent`].
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<World, TrainError> {
        let number = |var: &'static str| -> Result<Option<usize>, TrainError> {
            get(var)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| TrainError::LaunchEnvGarbled {
                            var,
                            value: v.clone(),
                            expected: "a non-negative integer",
                        })
                })
                .transpose()
        };
        let required = |var: &'static str| number(var)?.ok_or(TrainError::LaunchEnvMissing { var });
        let world_size = number("WORLD_SIZE")?.unwrap_or(1);
        if world_size == 0 {
            return Err(TrainError::LaunchEnvGarbled {
                var: "WORLD_SIZE",
                value: "0".into(),
                expected: "a positive integer",
            });
        }
        let below = |var: &'static str, value: usize| {
            if value < world_size {
                Ok(value)
            } else {
                Err(TrainError::LaunchEnvInconsistent {
                    var,
                    value,
                    bound_var: "WORLD_SIZE",
                    bound: world_size,
                })
            }
        };
        if world_size == 1 {
            below("RANK", number("RANK")?.unwrap_or(0))?;
            below("LOCAL_RANK", number("LOCAL_RANK")?.unwrap_or(0))?;
            return Ok(World::SINGLE);
        }
        let rank = below("RANK", required("RANK")?)?;
        let local_rank = below("LOCAL_RANK", required("LOCAL_RANK")?)?;
        let master_addr = get("MASTER_ADDR")
            .filter(|a| !a.trim().is_empty())
            .ok_or(TrainError::LaunchEnvMissing { var: "MASTER_ADDR" })?;
        let port = |var: &'static str, value: String| {
            value.trim().parse::<u16>().ok().filter(|&p| p > 0).ok_or(
                TrainError::LaunchEnvGarbled {
                    var,
                    value,
                    expected: "a port number (1 to 65535)",
                },
            )
        };
        let master_port = port(
            "MASTER_PORT",
            get("MASTER_PORT").ok_or(TrainError::LaunchEnvMissing { var: "MASTER_PORT" })?,
        )?;
        let id_port = match get("HVQ_NCCL_PORT") {
            Some(v) => port("HVQ_NCCL_PORT", v)?,
            None => master_port
                .checked_add(1)
                .ok_or(TrainError::LaunchEnvGarbled {
                    var: "MASTER_PORT",
                    value: master_port.to_string(),
                    expected: "below 65535 (the NCCL id goes to MASTER_PORT + 1; or set HVQ_NCCL_PORT)",
                })?,
        };
        Ok(World {
            rank,
            world_size,
            local_rank,
            master_addr: master_addr.trim().to_string(),
            id_port,
        })
    }

    /// [`World::parse`] of the process environment.
    pub fn from_env() -> Result<World, TrainError> {
        World::parse(|var| std::env::var(var).ok())
    }

    /// Whether there is more than one process.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }
}

/// Rank `rank`'s part of a global batch `[B, ...]`: samples `[r·B/w, (r+1)·B/w)`, so which
/// images a rank sees depends only on the global batch (and a resumed run stays exact).
/// `B` must be divisible by `world_size` (the trainer checks `schedule.batch`).
pub fn shard(batch: &Tensor, rank: usize, world_size: usize) -> Tensor {
    let local = batch.size()[0] / world_size as i64;
    batch.narrow(0, rank as i64 * local, local)
}

/// The collective operations of data-parallel training. Every rank must call the same
/// operations in the same order with tensors of the same kind and size; they block until all
/// have arrived.
pub trait Collective: Send + Sync {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Replaces `t` (f32, f64 or i64) by its sum over all ranks.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), TrainError>;
    /// Replaces `t` (f32, f64 or i64) by its element-wise maximum over all ranks.
    fn all_reduce_max(&self, t: &mut Tensor) -> Result<(), TrainError>;
    /// Replaces `t` by rank `root`'s `t`.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), TrainError>;

    /// Every rank's `local` concatenated along the first dimension in rank order, on every
    /// rank: the global batch from the ranks' slices. Every rank must pass a tensor of the same
    /// kind (f32, f64 or i64) and shape. Made of one [`Collective::broadcast`] per rank, so every
    /// implementation has it; the bytes are copied, never combined, so the result is exact.
    ///
    /// Errors: the broadcasts'.
    fn all_gather(&self, local: &Tensor) -> Result<Tensor, TrainError> {
        let local = local.contiguous();
        let mut parts = Vec::with_capacity(self.world_size());
        for root in 0..self.world_size() {
            let mut part = if root == self.rank() {
                local.copy()
            } else {
                local.zeros_like()
            };
            self.broadcast(&mut part, root)?;
            parts.push(part);
        }
        Ok(Tensor::cat(&parts, 0))
    }
}

/// What a collective does with the ranks' tensors.
#[derive(Debug, Clone, Copy)]
enum Reduce {
    Sum,
    Max,
    Broadcast(usize),
}

/// A tensor's elements on the host.
#[derive(Debug, Clone)]
enum Payload {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl Payload {
    fn of(op: &'static str, t: &Tensor) -> Result<Payload, TrainError> {
        let flat = t.detach().reshape([-1]).to_device(Device::Cpu);
        Ok(match t.kind() {
            Kind::Float => Payload::F32(Vec::try_from(&flat)?),
            Kind::Double => Payload::F64(Vec::try_from(&flat)?),
            Kind::Int64 => Payload::I64(Vec::try_from(&flat)?),
            kind => {
                return Err(TrainError::CollectiveTensor {
                    op,
                    kind,
                    device: t.device(),
                    expected: "f32, f64 or i64",
                });
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            Payload::F32(v) => v.len(),
            Payload::F64(v) => v.len(),
            Payload::I64(v) => v.len(),
        }
    }

    /// Folds `other` into `self` (same variant and length, checked by the caller).
    fn fold(&mut self, other: &Payload, reduce: Reduce) {
        fn fold<T: Copy>(a: &mut [T], b: &[T], f: impl Fn(T, T) -> T) {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = f(*x, y);
            }
        }
        match (self, other, reduce) {
            (Payload::F32(a), Payload::F32(b), Reduce::Sum) => fold(a, b, |x, y| x + y),
            (Payload::F32(a), Payload::F32(b), Reduce::Max) => fold(a, b, f32::max),
            (Payload::F64(a), Payload::F64(b), Reduce::Sum) => fold(a, b, |x, y| x + y),
            (Payload::F64(a), Payload::F64(b), Reduce::Max) => fold(a, b, f64::max),
            (Payload::I64(a), Payload::I64(b), Reduce::Sum) => fold(a, b, |x, y| x + y),
            (Payload::I64(a), Payload::I64(b), Reduce::Max) => fold(a, b, i64::max),
            _ => {}
        }
    }

    fn same_layout(&self, other: &Payload) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && self.len() == other.len()
    }

    /// Writes the elements back into `t` (same kind and element count).
    fn store(&self, t: &mut Tensor) {
        let src = match self {
            Payload::F32(v) => Tensor::from_slice(v),
            Payload::F64(v) => Tensor::from_slice(v),
            Payload::I64(v) => Tensor::from_slice(v),
        };
        let src = src.view(t.size().as_slice()).to_device(t.device());
        tch::no_grad(|| t.copy_(&src));
    }
}

/// The ranks' payloads combined in rank order, so every rank gets the same bits.
fn combine(slots: Vec<Payload>, reduce: Reduce) -> Result<Payload, (usize, usize, usize)> {
    let expected = slots[0].len();
    if let Some((rank, p)) = slots
        .iter()
        .enumerate()
        .find(|(_, p)| !p.same_layout(&slots[0]))
    {
        return Err((rank, p.len(), expected));
    }
    if let Reduce::Broadcast(root) = reduce {
        return Ok(slots.into_iter().nth(root).expect("root checked"));
    }
    let mut slots = slots.into_iter();
    let mut acc = slots.next().expect("at least one rank");
    for p in slots {
        acc.fold(&p, reduce);
    }
    Ok(acc)
}

/// One collective in progress among the threads of a [`LocalGroup`].
#[derive(Debug, Default)]
struct Round {
    /// Counts finished collectives; a rank waits for it to move on before the next one.
    generation: u64,
    slots: Vec<Option<Payload>>,
    arrived: usize,
    departed: usize,
    /// The combined payload, or `(rank, got, expected)` of a size mismatch.
    result: Option<Result<Payload, (usize, usize, usize)>>,
}

#[derive(Debug)]
struct Shared {
    world_size: usize,
    timeout: Duration,
    round: Mutex<Round>,
    turn: Condvar,
}

/// N ranks in N threads of one process: tensors are copied to the host and combined in rank
/// order, so the result is deterministic and bit-identical on every rank. With one rank it is
/// the trivial group.
#[derive(Debug, Clone)]
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// The handles of a group of `world_size` ranks, rank `r` at index `r`; a collective
    /// waits at most a minute for the others.
    pub fn new(world_size: usize) -> Vec<LocalGroup> {
        LocalGroup::with_timeout(world_size, Duration::from_secs(60))
    }

    /// As [`LocalGroup::new`], waiting at most `timeout` in a collective.
    pub fn with_timeout(world_size: usize, timeout: Duration) -> Vec<LocalGroup> {
        assert!(world_size > 0, "a group needs a rank");
        let shared = Arc::new(Shared {
            world_size,
            timeout,
            round: Mutex::new(Round {
                slots: vec![None; world_size],
                ..Round::default()
            }),
            turn: Condvar::new(),
        });
        (0..world_size)
            .map(|rank| LocalGroup {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    fn exchange(&self, op: &'static str, t: &mut Tensor, reduce: Reduce) -> Result<(), TrainError> {
        let payload = Payload::of(op, t)?;
        let s = &*self.shared;
        let timeout = || TrainError::CollectiveTimeout {
            op,
            secs: s.timeout.as_secs(),
            addr: None,
        };
        let mut round = s.round.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = round.generation;
        round.slots[self.rank] = Some(payload);
        round.arrived += 1;
        if round.arrived == s.world_size {
            let slots = round
                .slots
                .iter_mut()
                .map(|p| p.take().expect("arrived"))
                .collect();
            round.result = Some(combine(slots, reduce));
            s.turn.notify_all();
        } else {
            let (r, _) = s
                .turn
                .wait_timeout_while(round, s.timeout, |r| {
                    r.generation == generation && r.result.is_none()
                })
                .unwrap_or_else(PoisonError::into_inner);
            round = r;
            if round.result.is_none() {
                return Err(timeout());
            }
        }
        let result = round.result.clone().expect("combined");
        round.departed += 1;
        if round.departed == s.world_size {
            round.result = None;
            round.arrived = 0;
            round.departed = 0;
            round.generation += 1;
            s.turn.notify_all();
        } else {
            let (r, wait) = s
                .turn
                .wait_timeout_while(round, s.timeout, |r| r.generation == generation)
                .unwrap_or_else(PoisonError::into_inner);
            if wait.timed_out() && r.generation == generation {
                return Err(timeout());
            }
        }
        match result {
            Ok(p) => {
                p.store(t);
                Ok(())
            }
            Err((rank, got, expected)) => Err(TrainError::CollectiveMismatch {
                op,
                rank,
                got,
                expected,
            }),
        }
    }
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world_size
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), TrainError> {
        self.exchange("all_reduce_sum", t, Reduce::Sum)
    }

    fn all_reduce_max(&self, t: &mut Tensor) -> Result<(), TrainError> {
        self.exchange("all_reduce_max", t, Reduce::Max)
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), TrainError> {
        assert!(
            root < self.shared.world_size,
            "broadcast root {root} out of range"
        );
        self.exchange("broadcast", t, Reduce::Broadcast(root))
    }
}

/// The collective group of a run: `None` for a single process (unless `nccl_for_one`, which
/// sends a single process's gradients through NCCL too: the check of the NCCL path on one GPU),
/// NCCL otherwise.
///
/// Errors: as [`Nccl::new`].
pub fn connect(
    world: &World,
    nccl_for_one: bool,
) -> Result<Option<Arc<dyn Collective>>, TrainError> {
    if !world.is_distributed() && !nccl_for_one {
        return Ok(None);
    }
    Ok(Some(Arc::new(Nccl::new(world, RENDEZVOUS_TIMEOUT)?)))
}

/// How long ranks wait for each other while exchanging the NCCL id.
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

/// `ncclUniqueId`: 128 opaque bytes made by rank 0 and handed to every rank.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [u8; 128],
}

/// `ncclComm_t`.
type Comm = *mut c_void;

/// The NCCL (and one CUDA runtime) entry points, resolved with `dlsym`.
struct NcclApi {
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int,
    #[allow(clippy::type_complexity)]
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        *mut c_void,
    ) -> c_int,
    #[allow(clippy::type_complexity)]
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        *mut c_void,
    ) -> c_int,
    comm_destroy: unsafe extern "C" fn(Comm) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    cuda_set_device: unsafe extern "C" fn(c_int) -> c_int,
}

// `ncclDataType_t` and `ncclRedOp_t` values (nccl.h).
const NCCL_INT64: c_int = 4;
const NCCL_FLOAT32: c_int = 7;
const NCCL_FLOAT64: c_int = 8;
const NCCL_SUM: c_int = 0;
const NCCL_MAX: c_int = 2;

/// The last `dlerror` message, if any.
fn dl_error() -> Option<String> {
    // SAFETY: dlerror returns null or a valid thread-local C string.
    let e = unsafe { libc::dlerror() };
    // SAFETY: checked non-null just before.
    (!e.is_null()).then(|| unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned())
}

/// Resolves `symbol` in `handle` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the C signature of `symbol`.
unsafe fn symbol<F: Copy>(
    handle: *mut c_void,
    symbol: &'static str,
    library: &str,
) -> Result<F, TrainError> {
    let name = CString::new(symbol).expect("symbol names have no NUL");
    // SAFETY: a valid handle (or RTLD_DEFAULT) and a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if p.is_null() {
        return Err(TrainError::MissingSymbol {
            symbol,
            library: library.to_string(),
        });
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller guarantees that F is the symbol's function-pointer type.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// Folders that may hold `libnccl.so.2`: those of `libtorch_cuda.so` (`LD_LIBRARY_PATH`,
/// `$LIBTORCH/lib`), then the pip wheel's `nvidia/nccl/lib` beside the torch package
/// (`$LIBTORCH/../nvidia/nccl/lib`) and the other `$LIBTORCH/../nvidia/*/lib`.
fn nccl_dirs() -> Vec<PathBuf> {
    let mut dirs = crate::device::library_dirs();
    if let Ok(lt) = std::env::var("LIBTORCH") {
        let nvidia = PathBuf::from(lt).join("../nvidia");
        dirs.push(nvidia.join("nccl/lib"));
        // CUDA 13 wheels gather their libraries under nvidia/cu13/lib.
        if let Ok(entries) = std::fs::read_dir(&nvidia) {
            let mut more: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("lib"))
                .filter(|d| d.is_dir() && !d.ends_with("nccl/lib"))
                .collect();
            more.sort();
            dirs.extend(more);
        }
    }
    dirs
}

/// `dlopen`s `libnccl.so.2` from [`nccl_dirs`], else by name from the loader's default path.
fn open_nccl() -> Result<(*mut c_void, String), TrainError> {
    let dirs = nccl_dirs();
    let mut candidates: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join("libnccl.so.2"))
        .filter(|p| p.exists())
        .collect();
    candidates.push(PathBuf::from("libnccl.so.2"));
    let mut detail = None;
    for path in &candidates {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("paths have no NUL");
        // SAFETY: a NUL-terminated path; the handle is leaked so NCCL stays loaded.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return Ok((handle, path.display().to_string()));
        }
        detail = dl_error();
    }
    Err(TrainError::NcclUnavailable {
        searched: dirs,
        detail,
    })
}

impl NcclApi {
    fn load() -> Result<NcclApi, TrainError> {
        let (h, lib) = open_nccl()?;
        // SAFETY: each type below is the documented C signature of its symbol (nccl.h,
        // cuda_runtime_api.h). cudaSetDevice comes from the CUDA runtime libtorch_cuda has
        // already loaded globally (`device::load_cuda_library`).
        unsafe {
            Ok(NcclApi {
                get_unique_id: symbol(h, "ncclGetUniqueId", &lib)?,
                comm_init_rank: symbol(h, "ncclCommInitRank", &lib)?,
                all_reduce: symbol(h, "ncclAllReduce", &lib)?,
                broadcast: symbol(h, "ncclBroadcast", &lib)?,
                comm_destroy: symbol(h, "ncclCommDestroy", &lib)?,
                error_string: symbol(h, "ncclGetErrorString", &lib)?,
                cuda_set_device: symbol(
                    libc::RTLD_DEFAULT,
                    "cudaSetDevice",
                    "the process (CUDA runtime)",
                )?,
            })
        }
    }

    /// `Ok` for `ncclSuccess` (0), else the typed error with NCCL's message.
    fn check(&self, call: &'static str, code: c_int) -> Result<(), TrainError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static C string for any code.
        let msg = unsafe { (self.error_string)(code) };
        let message = if msg.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: non-null, static, NUL-terminated.
            unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        Err(TrainError::CollectiveCall {
            call,
            code,
            message,
        })
    }
}

/// An NCCL communicator. NCCL allows any thread to use it, just not two at once: the mutex
/// serialises the calls.
struct CommHandle(Comm);
// SAFETY: see above; the pointer is only used under the mutex of `Nccl`.
unsafe impl Send for CommHandle {}

/// NCCL over the GPUs of a run, one rank per process, loaded at run time from `libnccl.so.2`.
///
/// Every operation is enqueued on the legacy default stream (stream null), the one libtorch
/// uses unless told otherwise, so it runs after the kernels that produced its input and
/// before those that read its output, without any host synchronisation.
pub struct Nccl {
    rank: usize,
    world_size: usize,
    api: NcclApi,
    comm: Mutex<CommHandle>,
}

impl Nccl {
    /// Loads NCCL, makes CUDA device `local_rank` current, has rank 0 hand its unique id to
    /// the others over TCP at `MASTER_ADDR:id_port`, and joins the communicator.
    ///
    /// Errors: [`TrainError::NcclUnavailable`], [`TrainError::MissingSymbol`],
    /// [`TrainError::Rendezvous`], [`TrainError::CollectiveTimeout`] (rank 0 not reachable or
    /// ranks missing within `timeout`), [`TrainError::CollectiveCall`].
    pub fn new(world: &World, timeout: Duration) -> Result<Nccl, TrainError> {
        let api = NcclApi::load()?;
        // SAFETY: plain CUDA runtime call.
        let code = unsafe { (api.cuda_set_device)(world.local_rank as c_int) };
        if code != 0 {
            return Err(TrainError::CollectiveCall {
                call: "cudaSetDevice",
                code,
                message: format!("cannot select CUDA device {}", world.local_rank),
            });
        }
        let mut id = UniqueId { internal: [0; 128] };
        if world.rank == 0 {
            // SAFETY: `id` is a valid ncclUniqueId to fill.
            api.check("ncclGetUniqueId", unsafe { (api.get_unique_id)(&mut id) })?;
            send_id(world, &id.internal, timeout)?;
        } else {
            id.internal = receive_id(world, timeout)?;
        }
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: `comm` is written by NCCL; the id is the one every rank shares.
        let code = unsafe {
            (api.comm_init_rank)(
                &mut comm,
                world.world_size as c_int,
                id,
                world.rank as c_int,
            )
        };
        api.check("ncclCommInitRank", code)?;
        Ok(Nccl {
            rank: world.rank,
            world_size: world.world_size,
            api,
            comm: Mutex::new(CommHandle(comm)),
        })
    }

    /// The NCCL data type of `t`, which must be a contiguous CUDA tensor of f32, f64 or i64.
    fn data_type(op: &'static str, t: &Tensor) -> Result<c_int, TrainError> {
        let bad = || TrainError::CollectiveTensor {
            op,
            kind: t.kind(),
            device: t.device(),
            expected: "a contiguous CUDA tensor of f32, f64 or i64",
        };
        if !t.device().is_cuda() || !t.is_contiguous() {
            return Err(bad());
        }
        match t.kind() {
            Kind::Float => Ok(NCCL_FLOAT32),
            Kind::Double => Ok(NCCL_FLOAT64),
            Kind::Int64 => Ok(NCCL_INT64),
            _ => Err(bad()),
        }
    }

    fn all_reduce(&self, op: &'static str, t: &mut Tensor, red: c_int) -> Result<(), TrainError> {
        let dtype = Nccl::data_type(op, t)?;
        let ptr = t.data_ptr();
        let comm = self.comm.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: in place on `t.numel()` contiguous device elements of `dtype`; stream null
        // is libtorch's (see the type's docs).
        let code = unsafe {
            (self.api.all_reduce)(
                ptr,
                ptr,
                t.numel(),
                dtype,
                red,
                comm.0,
                std::ptr::null_mut(),
            )
        };
        self.api.check("ncclAllReduce", code)
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), TrainError> {
        self.all_reduce("all_reduce_sum", t, NCCL_SUM)
    }

    fn all_reduce_max(&self, t: &mut Tensor) -> Result<(), TrainError> {
        self.all_reduce("all_reduce_max", t, NCCL_MAX)
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), TrainError> {
        let dtype = Nccl::data_type("broadcast", t)?;
        let ptr = t.data_ptr();
        let comm = self.comm.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as in `all_reduce`.
        let code = unsafe {
            (self.api.broadcast)(
                ptr,
                ptr,
                t.numel(),
                dtype,
                root as c_int,
                comm.0,
                std::ptr::null_mut(),
            )
        };
        self.api.check("ncclBroadcast", code)
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        let comm = self.comm.get_mut().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: the communicator made in `new`, destroyed once.
        let _ = unsafe { (self.api.comm_destroy)(comm.0) };
    }
}

/// Rank 0: listens on `id_port` and writes the id to each of the other `world_size - 1` ranks.
fn send_id(world: &World, id: &[u8; 128], timeout: Duration) -> Result<(), TrainError> {
    let addr = format!("{}:{}", world.master_addr, world.id_port);
    let err = |source| TrainError::Rendezvous {
        addr: addr.clone(),
        source,
    };
    // Every interface: MASTER_ADDR names this host, under whichever address the others use.
    let listener = TcpListener::bind(("0.0.0.0", world.id_port)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let deadline = Instant::now() + timeout;
    let mut served = 0;
    while served + 1 < world.world_size {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).map_err(err)?;
                stream.write_all(id).map_err(err)?;
                served += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(TrainError::CollectiveTimeout {
                        op: "NCCL id exchange",
                        secs: timeout.as_secs(),
                        addr: Some(addr),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// Other ranks: connects to rank 0 (retrying until `timeout`) and reads the id.
fn receive_id(world: &World, timeout: Duration) -> Result<[u8; 128], TrainError> {
    let addr = format!("{}:{}", world.master_addr, world.id_port);
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match TcpStream::connect(addr.as_str()) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => {
                return Err(TrainError::CollectiveTimeout {
                    op: "NCCL id exchange",
                    secs: timeout.as_secs(),
                    addr: Some(addr),
                });
            }
        }
    };
    let err = |source| TrainError::Rendezvous {
        addr: addr.clone(),
        source,
    };
    stream
        .set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
        ))
        .map_err(err)?;
    let mut id = [0u8; 128];
    stream.read_exact(&mut id).map_err(err)?;
    Ok(id)
}
