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
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Optimizes `vars` (name, variable), sorted by name so state order is canonical.
    pub fn new(mut vars: Vec<(String, Tensor)>, params: AdamParams) -> Self {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, t)| t.zeros_like().detach()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like().detach()).collect();
        let (names, vars) = vars.into_iter().unzip();
        Adam {
            params,
            steps: 0,
            names,
            vars,
            m,
            v,
        }
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
            for ((var, m), v) in self.vars.iter_mut().zip(&mut self.m).zip(&mut self.v) {
                let g = var.grad();
                if !g.defined() {
                    continue;
                }
                *m *= beta1;
                *m += &g * (1.0 - beta1);
                *v *= beta2;
                *v += g.square() * (1.0 - beta2);
                let denom = (&*v / bc2).sqrt() + eps;
                let update = (&*m / bc1) / denom * lr;
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
