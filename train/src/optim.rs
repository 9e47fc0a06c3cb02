//! Adam over named tch tensors, written out so its moment estimates can be checkpointed
//! and restored bit for bit (tch's built-in optimizer hides them).

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
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Optimizes `vars` (name, variable), sorted by name so state order is canonical.
    pub fn new(mut vars: Vec<(String, Tensor)>, params: AdamParams) -> Self {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, t)| t.zeros_like().detach()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like().detach()).collect();
        let (names, vars): (Vec<String>, Vec<Tensor>) = vars.into_iter().unzip();
        Adam {
            params,
            steps: 0,
            lr_scales: vec![1.0; names.len()],
            names,
            vars,
            m,
            v,
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
        self.steps += 1;
        let AdamParams { beta1, beta2, eps } = self.params;
        let bc1 = 1.0 - beta1.powf(self.steps as f64);
        let bc2 = 1.0 - beta2.powf(self.steps as f64);
        tch::no_grad(|| {
            let scaled = self.lr_scales.iter();
            for (((var, m), v), scale) in self
                .vars
                .iter_mut()
                .zip(&mut self.m)
                .zip(&mut self.v)
                .zip(scaled)
            {
                let g = var.grad();
                if !g.defined() {
                    continue;
                }
                *m *= beta1;
                *m += &g * (1.0 - beta1);
                *v *= beta2;
                *v += g.square() * (1.0 - beta2);
                let denom = (&*v / bc2).sqrt() + eps;
                let update = (&*m / bc1) / denom * (lr * scale);
                *var -= &update;
            }
        });
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
