//! Device time per kernel dispatch, from timestamp queries: what a GPU spends its time on, and
//! how close each kernel comes to the card's peak.

/// One dispatch of a profiled run: its kernel, its shape, its device time and its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// The kernel's file stem (`"conv2d"`, `"codebook_search"`, …).
    pub kernel: &'static str,
    /// The dispatch's shape in words (`"3x3 64 -> 64 at 256x256, norm+swish"`).
    pub shape: String,
    /// Device time between the start and the end of its pass, in nanoseconds.
    pub ns: f64,
    /// FLOPs of the whole batch, counted as `hvq_spec::flops` counts them: matrix products
    /// only (convolutions, attention's two products, the codebook distances); 0 for the
    /// memory-bound kernels.
    pub flops: u64,
    /// Bytes the dispatch must at least read and write (each input and output once).
    pub bytes: u64,
}

/// Every dispatch of one profiled run, in execution order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// One entry per dispatch.
    pub dispatches: Vec<Timing>,
}

/// A kernel's dispatches of one profile, summed.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTotal {
    /// The kernel's file stem.
    pub kernel: &'static str,
    /// How many dispatches ran it.
    pub dispatches: usize,
    /// Their device time, in nanoseconds.
    pub ns: f64,
    /// Their FLOPs.
    pub flops: u64,
    /// Their minimum traffic in bytes.
    pub bytes: u64,
}

impl KernelTotal {
    /// Achieved GFLOP/s (0 for kernels without matrix products).
    pub fn gflop_per_s(&self) -> f64 {
        per_ns(self.flops, self.ns)
    }

    /// Achieved GB/s of minimum traffic.
    pub fn gb_per_s(&self) -> f64 {
        per_ns(self.bytes, self.ns)
    }
}

fn per_ns(amount: u64, ns: f64) -> f64 {
    if ns > 0.0 { amount as f64 / ns } else { 0.0 }
}

impl Profile {
    /// Device time of every dispatch, in nanoseconds.
    pub fn total_ns(&self) -> f64 {
        self.dispatches.iter().map(|d| d.ns).sum()
    }

    /// FLOPs of every dispatch.
    pub fn total_flops(&self) -> u64 {
        self.dispatches.iter().map(|d| d.flops).sum()
    }

    /// Per kernel: dispatches, time, FLOPs and traffic, the most expensive first.
    pub fn by_kernel(&self) -> Vec<KernelTotal> {
        let mut totals: Vec<KernelTotal> = Vec::new();
        for d in &self.dispatches {
            match totals.iter_mut().find(|t| t.kernel == d.kernel) {
                Some(t) => {
                    t.dispatches += 1;
                    t.ns += d.ns;
                    t.flops += d.flops;
                    t.bytes += d.bytes;
                }
                None => totals.push(KernelTotal {
                    kernel: d.kernel,
                    dispatches: 1,
                    ns: d.ns,
                    flops: d.flops,
                    bytes: d.bytes,
                }),
            }
        }
        totals.sort_by(|a, b| b.ns.total_cmp(&a.ns));
        totals
    }

    /// A Markdown table of [`Profile::by_kernel`], with each kernel's share of the time and,
    /// given the card's FP32 peak in TFLOP/s, its fraction of that peak.
    pub fn table(&self, fp32_peak_tflops: Option<f64>) -> String {
        let total = self.total_ns().max(f64::MIN_POSITIVE);
        let mut out = String::from(
            "| kernel | dispatches | ms | share | GFLOP/s | GB/s (min traffic) | % of FP32 peak |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for k in self.by_kernel() {
            let peak = match fp32_peak_tflops {
                Some(p) if k.flops > 0 => format!("{:.1} %", 100.0 * k.gflop_per_s() / (p * 1e3)),
                _ => "–".into(),
            };
            out.push_str(&format!(
                "| {} | {} | {:.3} | {:.1} % | {:.2} | {:.2} | {peak} |\n",
                k.kernel,
                k.dispatches,
                k.ns / 1e6,
                100.0 * k.ns / total,
                k.gflop_per_s(),
                k.gb_per_s(),
            ));
        }
        out
    }
}
