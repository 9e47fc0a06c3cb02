//! Adam over named tch tensors, written out so its moment estimates can be checkpointed
//! and restored bit for bit (tch's built-in optimizer hides them).
//!
//! The variables, and both moments, live in one flat buffer each (every variable a view into
//! it), so an update is about fifteen whole-buffer operations instead of fourteen per
//! variable — for the `small` preset about 3400 kernel launches a step on a GPU. The
//! arithmetic is the per-variable one, element for element, so results are bit-identical.

use tch::{Kind, Tensor};

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
}

/// Adam (Kingma & Ba) with bias correction and no weight decay.
#[derive(Debug)]
pub struct Adam {
    params: AdamParams,
    /// Updates applied so far (the `t` of bias correction).
    pub steps: u64,
    names: Vec<String>,
    vars: Vec<Tensor>,
    /// Per-variable learning-rate multipliers (1 unless [`Adam::set_lr_scale`] changed one).
    lr_scales: Vec<f64>,
    /// Per-variable views of the flat moment buffers.
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// The flat buffers, when every variable could be laid out in one.
    flat: Option<Flat>,
}

/// Gradients gathered by [`Adam::flat_grads`]: one flat f32 buffer, then a tail of extra values.
#[derive(Debug)]
pub struct FlatGrads {
    /// Gradients of the variables that have one, in variable order, then the tail.
    pub buffer: Tensor,
    /// `(start, len)` of each variable's gradient in `buffer`, `None` without one.
    spans: Vec<Option<(i64, i64)>>,
    /// `(start, len)` of the tail.
    tail: (i64, i64),
}

impl FlatGrads {
    /// The tail values (a view of [`FlatGrads::buffer`]).
    pub fn tail(&self) -> Tensor {
        self.buffer.narrow(0, self.tail.0, self.tail.1)
    }
}

/// Variables and moments as flat f32 buffers; `vars[i]`, `m[i]`, `v[i]` are views of them.
#[derive(Debug)]
struct Flat {
    params: Tensor,
    m: Tensor,
    v: Tensor,
    /// `(start, len)` of each variable in the buffers.
    spans: Vec<(i64, i64)>,
}

impl Adam {
    /// Optimizes `vars` (name, variable), sorted by name so state order is canonical.
    ///
    /// When every variable is an f32 tensor on one device, their data move into one flat
    /// buffer (values unchanged; every other handle on a variable sees the move).
    pub fn new(mut vars: Vec<(String, Tensor)>, params: AdamParams) -> Self {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, mut vars): (Vec<String>, Vec<Tensor>) = vars.into_iter().unzip();
        let flat = Flat::adopt(&mut vars);
        let (m, v) = match &flat {
            Some(f) => (f.views(&f.m, &vars), f.views(&f.v, &vars)),
            None => (
                vars.iter().map(|t| t.zeros_like().detach()).collect(),
                vars.iter().map(|t| t.zeros_like().detach()).collect(),
            ),
        };
        Adam {
            params,
            steps: 0,
            lr_scales: vec![1.0; names.len()],
            names,
            vars,
            m,
            v,
            flat,
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Multiplies the learning rate of variable `name` by `scale`; returns whether it exists.
    pub fn set_lr_scale(&mut self, name: &str, scale: f64) -> bool {
        match self.index_of(name) {
            Some(i) => {
                self.lr_scales[i] = scale;
                true
            }
            None => false,
        }
    }

    /// Zeroes both moments of the given rows (dim 0, i64 indices) of variable `name`, as for a
    /// freshly created parameter; returns whether the variable exists.
    pub fn reset_rows(&mut self, name: &str, rows: &Tensor) -> bool {
        let Some(i) = self.index_of(name) else {
            return false;
        };
        tch::no_grad(|| {
            let _ = self.m[i].index_fill_(0, rows, 0.0);
            let _ = self.v[i].index_fill_(0, rows, 0.0);
        });
        true
    }

    /// Clears every variable's gradient.
    pub fn zero_grad(&mut self) {
        for v in &mut self.vars {
            v.zero_grad();
        }
    }

    /// One update with learning rate `lr`; variables without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let device = self.vars.first().map_or(tch::Device::Cpu, Tensor::device);
        let grads = self.flat_grads(&Tensor::zeros([0], (Kind::Float, device)));
        self.step_with(lr, &grads);
    }

    /// Every variable's gradient (those without one take no room) in one flat f32 buffer,
    /// followed by the elements of `tail`: what data-parallel training all-reduces in one
    /// call before [`Adam::step_with`] applies it.
    pub fn flat_grads(&self, tail: &Tensor) -> FlatGrads {
        let mut spans = Vec::with_capacity(self.vars.len());
        let mut pieces = Vec::with_capacity(self.vars.len() + 1);
        let mut start = 0;
        for var in &self.vars {
            let g = var.grad();
            if g.defined() {
                let len = g.numel() as i64;
                spans.push(Some((start, len)));
                pieces.push(g.reshape([-1]).to_kind(Kind::Float));
                start += len;
            } else {
                spans.push(None);
            }
        }
        let tail_len = tail.numel() as i64;
        if tail_len > 0 {
            pieces.push(tail.detach().reshape([-1]).to_kind(Kind::Float));
        }
        let buffer = if pieces.is_empty() {
            Tensor::zeros([0], (Kind::Float, tail.device()))
        } else {
            Tensor::cat(&pieces, 0)
        };
        FlatGrads {
            buffer,
            spans,
            tail: (start, tail_len),
        }
    }

    /// One update with learning rate `lr` from gradients gathered by [`Adam::flat_grads`]
    /// (and possibly changed since, e.g. averaged over ranks): the same arithmetic as
    /// [`Adam::step`], so unchanged gradients give bit-identical results.
    pub fn step_with(&mut self, lr: f64, grads: &FlatGrads) {
        self.steps += 1;
        tch::no_grad(|| match &self.flat {
            Some(flat) if grads.spans.iter().all(Option::is_some) => {
                self.flat_step(flat, &grads.buffer.narrow(0, 0, grads.tail.0), lr)
            }
            _ => {
                let views: Vec<Tensor> = grads
                    .spans
                    .iter()
                    .zip(&self.vars)
                    .map(|(span, var)| match span {
                        Some((start, len)) => grads
                            .buffer
                            .narrow(0, *start, *len)
                            .view(var.size().as_slice())
                            .to_kind(var.kind()),
                        None => Tensor::new(),
                    })
                    .collect();
                self.per_variable_step(&views, lr)
            }
        });
    }

    /// `(bias correction of m, of v)` after `self.steps` updates.
    fn bias_corrections(&self) -> (f64, f64) {
        let AdamParams { beta1, beta2, .. } = self.params;
        let t = self.steps as f64;
        (1.0 - beta1.powf(t), 1.0 - beta2.powf(t))
    }

    /// The update on the flat buffers: the same operations as [`Adam::per_variable_step`], once.
    fn flat_step(&self, flat: &Flat, g: &Tensor, lr: f64) {
        let AdamParams { beta1, beta2, eps } = self.params;
        let (bc1, bc2) = self.bias_corrections();
        let (mut m, mut v) = (flat.m.shallow_clone(), flat.v.shallow_clone());
        m *= beta1;
        m += g * (1.0 - beta1);
        v *= beta2;
        v += g.square() * (1.0 - beta2);
        let denom = (&v / bc2).sqrt() + eps;
        let direction = (&m / bc1) / denom;
        // One subtraction per run of variables with the same learning-rate scale.
        for (start, len, scale) in self.scale_runs(flat) {
            let mut p = flat.params.narrow(0, start, len);
            p -= direction.narrow(0, start, len) * (lr * scale);
        }
    }

    /// Consecutive variables with equal learning-rate scales as `(start, len, scale)` spans.
    fn scale_runs(&self, flat: &Flat) -> Vec<(i64, i64, f64)> {
        let mut runs: Vec<(i64, i64, f64)> = Vec::new();
        for (&(start, len), &scale) in flat.spans.iter().zip(&self.lr_scales) {
            match runs.last_mut() {
                Some(run) if run.2 == scale => run.1 += len,
                _ => runs.push((start, len, scale)),
            }
        }
        runs
    }

    /// The update variable by variable (some variable has no gradient, or no flat buffers).
    fn per_variable_step(&self, grads: &[Tensor], lr: f64) {
        let AdamParams { beta1, beta2, eps } = self.params;
        let (bc1, bc2) = self.bias_corrections();
        for (i, g) in grads.iter().enumerate() {
            if !g.defined() {
                continue;
            }
            let (mut var, mut m, mut v) = (
                self.vars[i].shallow_clone(),
                self.m[i].shallow_clone(),
                self.v[i].shallow_clone(),
            );
            m *= beta1;
            m += g * (1.0 - beta1);
            v *= beta2;
            v += g.square() * (1.0 - beta2);
            let denom = (&v / bc2).sqrt() + eps;
            let update = (&m / bc1) / denom * (lr * self.lr_scales[i]);
            var -= &update;
        }
    }

    /// Moment estimates as named tensors (`adam.m.<var>`, `adam.v.<var>`) for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.names.len());
        for (i, n) in self.names.iter().enumerate() {
            out.push((format!("adam.m.{n}"), self.m[i].shallow_clone()));
            out.push((format!("adam.v.{n}"), self.v[i].shallow_clone()));
        }
        out
    }

    /// Restores moment estimates saved by [`Adam::state`]; `get` looks a tensor up by name.
    /// Returns the first missing name on failure.
    pub fn load_state(
        &mut self,
        steps: u64,
        get: impl Fn(&str) -> Option<Tensor>,
    ) -> Result<(), String> {
        tch::no_grad(|| {
            for (i, n) in self.names.iter().enumerate() {
                for (prefix, dst) in [("adam.m.", &mut self.m[i]), ("adam.v.", &mut self.v[i])] {
                    let name = format!("{prefix}{n}");
                    let src = get(&name).ok_or_else(|| name.clone())?;
                    if src.size() != dst.size() {
                        return Err(format!(
                            "{name}: shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        ));
                    }
                    dst.copy_(&src.to_kind(Kind::Float));
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

impl Flat {
    /// Moves the data of `vars` into one flat buffer, each variable becoming a view of it;
    /// `None` (nothing moved) unless all are f32 on one device.
    fn adopt(vars: &mut [Tensor]) -> Option<Flat> {
        let first = vars.first()?;
        let device = first.device();
        if vars
            .iter()
            .any(|t| t.kind() != Kind::Float || t.device() != device)
        {
            return None;
        }
        let mut spans = Vec::with_capacity(vars.len());
        let mut start = 0;
        for t in vars.iter() {
            let len = t.numel() as i64;
            spans.push((start, len));
            start += len;
        }
        let pieces: Vec<Tensor> = vars.iter().map(|t| t.detach().reshape([-1])).collect();
        let params = Tensor::cat(&pieces, 0);
        let flat = Flat {
            m: params.zeros_like(),
            v: params.zeros_like(),
            params,
            spans,
        };
        let views = flat.views(&flat.params, vars);
        tch::no_grad(|| {
            for (var, view) in vars.iter_mut().zip(&views) {
                var.set_data(view);
            }
        });
        Some(flat)
    }

    /// Views of `buffer` shaped like each of `vars`.
    fn views(&self, buffer: &Tensor, vars: &[Tensor]) -> Vec<Tensor> {
        self.spans
            .iter()
            .zip(vars)
            .map(|(&(start, len), var)| buffer.narrow(0, start, len).view(var.size().as_slice()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn variables(seed: i64) -> Vec<(String, Tensor)> {
        tch::manual_seed(seed);
        [
            ("a", vec![3, 4]),
            ("b.codebook", vec![5, 2]),
            ("c", vec![7]),
        ]
        .into_iter()
        .map(|(n, shape)| {
            let t =
                Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).set_requires_grad(true);
            (n.to_string(), t)
        })
        .collect()
    }

    /// Gives every variable the gradient of `Σ var · r` for a seeded random `r`.
    fn set_grads(adam: &mut Adam, seed: i64) {
        adam.zero_grad();
        tch::manual_seed(seed);
        let loss = adam
            .vars
            .iter()
            .map(|v| (v * Tensor::randn_like(v)).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
    }

    #[test]
    fn flat_updates_are_bit_identical_to_per_variable_ones() {
        let params = AdamParams {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
        };
        let mut flat = Adam::new(variables(3), params);
        assert!(flat.flat.is_some());
        let mut plain = Adam::new(variables(3), params);
        plain.flat = None;
        for adam in [&mut flat, &mut plain] {
            assert!(adam.set_lr_scale("b.codebook", 3.0));
        }
        for step in 0..4 {
            for adam in [&mut flat, &mut plain] {
                set_grads(adam, 100 + step);
                adam.step(1e-2);
            }
        }
        for (i, name) in flat.names.iter().enumerate() {
            assert!(flat.vars[i].equal(&plain.vars[i]), "{name} differs");
            assert!(flat.m[i].equal(&plain.m[i]) && flat.v[i].equal(&plain.v[i]));
        }
        // The variables really are views of the flat buffer: an update moved them.
        assert!(!flat.vars[0].equal(&variables(3)[0].1));
    }

    #[test]
    fn values_riding_behind_the_gradients_leave_the_update_unchanged() {
        let params = AdamParams {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
        };
        let mut plain = Adam::new(variables(7), params);
        let mut gathered = Adam::new(variables(7), params);
        for step in 0..3 {
            set_grads(&mut plain, 200 + step);
            plain.step(1e-2);
            set_grads(&mut gathered, 200 + step);
            let tail = Tensor::from_slice(&[1.5f32, -2.0]);
            let grads = gathered.flat_grads(&tail);
            assert!(grads.tail().equal(&tail));
            gathered.step_with(1e-2, &grads);
        }
        for (a, b) in plain.vars.iter().zip(&gathered.vars) {
            assert!(a.equal(b));
        }
    }

    #[test]
    fn a_variable_without_gradient_is_left_alone() {
        let params = AdamParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let vars = variables(5);
        let before = vars[2].1.detach().copy();
        let mut adam = Adam::new(vars, params);
        adam.zero_grad();
        (&adam.vars[0] * 2.0).sum(Kind::Float).backward();
        adam.step(0.1);
        assert!(adam.vars[2].equal(&before));
        assert!(!adam.vars[0].equal(&variables(5)[0].1));
    }
}
