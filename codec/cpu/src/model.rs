//! The whole model on the CPU: one interpreter that runs the programs of
//! [`hvq_spec::graph`] over [`ops`] (image → latents → tokens, and tokens → image per level).

use std::sync::Arc;

use hvq_spec::graph::{self, Data, ModelGraph, Node, Op, Output, ParamId, Program, Value};
use hvq_spec::{FeatureMap, ModelConfig, Tensor, TokenGrid, Weights};

use crate::CpuError;
use crate::ops::{self, Affine, AttnWeights, GroupNormParams};

/// A model ready to run on the CPU: validated weights plus the programs that use them.
///
/// ```
/// use hvq_cpu::CpuModel;
/// use hvq_spec::{FeatureMap, ModelConfig, random_weights};
///
/// let model = CpuModel::new(random_weights(&ModelConfig::tiny(), 1).unwrap());
/// let image = FeatureMap { channels: 3, height: 16, width: 16, data: vec![0.5; 3 * 16 * 16] };
/// let grids = model.encode(&image, &[0, 2]).unwrap();
/// assert_eq!((grids[1].level, grids[1].height), (2, 2)); // tiny: stride 2 · 2² = 8
/// let rgb = model.decode(&grids[1]).unwrap();
/// assert_eq!((rgb.channels, rgb.height, rgb.width), (3, 16, 16));
/// ```
#[derive(Debug, Clone)]
pub struct CpuModel {
    weights: Arc<Weights>,
    /// The model's programs with this backend's one fusion applied: each residual add runs
    /// inside the convolution before it (`conv2d_accumulate`).
    graph: Arc<ModelGraph>,
}

impl CpuModel {
    /// Wraps validated weights (every schema tensor is known to be present).
    pub fn new(weights: impl Into<Arc<Weights>>) -> Self {
        let weights = weights.into();
        let mut graph = ModelGraph::new(weights.config());
        for p in std::iter::once(&mut graph.encoder).chain(&mut graph.decoders) {
            p.fuse_residuals(&[]);
        }
        CpuModel {
            weights,
            graph: Arc::new(graph),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.weights.config()
    }

    /// The weights this model runs.
    pub fn weights(&self) -> &Arc<Weights> {
        &self.weights
    }

    /// The projected latents `p_l` (codebook dimension `D` channels) of every level, finest first.
    ///
    /// `image` is RGB in `[0, 1]`, its size a positive multiple of
    /// [`ModelConfig::coarsest_stride`] (see [`ops::pad_edge`]).
    pub fn encode_latents(&self, image: &FeatureMap) -> Result<Vec<FeatureMap>, CpuError> {
        self.config().check_image(image)?;
        let e = &self.graph.encoder;
        let wanted = outputs(e, (0..self.config().levels).map(Output::Latent));
        let given = vec![(e.input, Data::Map(image.clone()))];
        self.run(e, given, &wanted)?
            .into_iter()
            .map(into_map)
            .collect()
    }

    /// Tokens of every latent map given (level `i` for `latents[i]`).
    pub fn tokens(&self, latents: &[FeatureMap]) -> Result<Vec<TokenGrid>, CpuError> {
        let cfg = self.config();
        if latents.len() > cfg.levels || latents.iter().any(|p| p.channels != cfg.codebook_dim) {
            return Err(CpuError::BadLatents {
                expected: cfg.levels,
                channels: cfg.codebook_dim,
                got: latents.len(),
            });
        }
        let e = &self.graph.encoder;
        let given = (0..latents.len())
            .map(|l| (output(e, Output::Latent(l)), Data::Map(latents[l].clone())))
            .collect();
        let wanted = outputs(e, (0..latents.len()).map(Output::Tokens));
        let grids = self.run(e, given, &wanted)?;
        grids
            .into_iter()
            .enumerate()
            .map(|(l, d)| into_grid(d, l))
            .collect()
    }

    /// The token grids of the requested `levels` (in the order given), running the encoder
    /// and the level chain only as far as the coarsest requested level needs.
    pub fn encode(&self, image: &FeatureMap, levels: &[usize]) -> Result<Vec<TokenGrid>, CpuError> {
        self.config().check_levels(levels)?;
        self.config().check_image(image)?;
        if levels.is_empty() {
            return Ok(Vec::new());
        }
        let e = &self.graph.encoder;
        let wanted = outputs(e, levels.iter().map(|&l| Output::Tokens(l)));
        let given = vec![(e.input, Data::Map(image.clone()))];
        let grids = self.run(e, given, &wanted)?;
        grids
            .into_iter()
            .zip(levels)
            .map(|(d, &l)| into_grid(d, l))
            .collect()
    }

    /// The RGB image in `[0, 1]` that level `grid.level`'s decoder rebuilds from `grid`,
    /// of size `grid × level_stride(level)`.
    pub fn decode(&self, grid: &TokenGrid) -> Result<FeatureMap, CpuError> {
        self.config().check_grid(grid)?;
        let d = &self.graph.decoders[grid.level];
        let given = vec![(d.input, Data::Tokens(grid.clone()))];
        self.run_to_image(d, given)
    }

    /// Runs level `level`'s decoder on codebook vectors (`D` channels), e.g. a token grid
    /// gathered with [`ops::gather_codes`]; returns RGB in `[0, 1]`.
    pub fn decode_quantized(
        &self,
        level: usize,
        quantized: &FeatureMap,
    ) -> Result<FeatureMap, CpuError> {
        self.config().check_levels(&[level])?;
        let d = &self.graph.decoders[level];
        let given = vec![(output(d, Output::Quantized), Data::Map(quantized.clone()))];
        self.run_to_image(d, given)
    }

    /// Runs `program` from the `given` values to the `wanted` ones, node by node, freeing every
    /// value after its last reader. Public so that tests can compare backends value by value.
    pub fn run(
        &self,
        program: &Program,
        given: Vec<(Value, Data)>,
        wanted: &[Value],
    ) -> Result<Vec<Data>, CpuError> {
        let ids: Vec<Value> = given.iter().map(|(v, _)| *v).collect();
        let plan = program.schedule(wanted, &ids);
        let mut values: Vec<Option<Data>> = vec![None; program.nodes.len()];
        for (v, d) in given {
            values[v.0] = Some(d);
        }
        for (&i, frees) in plan.order.iter().zip(&plan.frees) {
            let out = self.eval(program, &program.nodes[i], &mut values, frees)?;
            for v in frees {
                values[v.0] = None;
            }
            values[i] = Some(out);
        }
        wanted
            .iter()
            .map(|w| values[w.0].clone().ok_or(MISSING_INPUT))
            .collect()
    }

    fn run_to_image(&self, d: &Program, given: Vec<(Value, Data)>) -> Result<FeatureMap, CpuError> {
        let image = output(d, Output::Image);
        let mut out = self.run(d, given, &[image])?;
        into_map(out.pop().ok_or(MISSING_INPUT)?)
    }

    /// One node. A residual that dies here is taken, not copied: the convolution accumulates
    /// into it.
    fn eval(
        &self,
        program: &Program,
        node: &Node,
        values: &mut [Option<Data>],
        frees: &[Value],
    ) -> Result<Data, CpuError> {
        let (mean, std) = program.mean_std;
        let out = match &node.op {
            Op::Input => return Err(MISSING_INPUT),
            Op::Normalize => {
                let mut x = rgb_input(node, values, frees, "normalize")?;
                normalize(&mut x, mean, std);
                x
            }
            Op::Denormalize => {
                let mut rgb = rgb_input(node, values, frees, "denormalize")?;
                denormalize(&mut rgb, mean, std);
                rgb
            }
            Op::Conv {
                affine,
                params,
                norm,
            } => {
                // Take the residual first (it may be moved out), then borrow the input.
                let residual = match node.inputs.get(1) {
                    Some(_) => Some(owned_input(node, values, frees, 1)?),
                    None => None,
                };
                let x = input_map(node, values, 0)?;
                let normed = match norm {
                    Some(n) => Some(ops::group_norm(x, self.norm_params(n))?),
                    None => None,
                };
                let x = normed.as_ref().unwrap_or(x);
                let (w, b) = (self.param(affine.weight), self.param(affine.bias));
                match residual {
                    None => ops::conv2d(x, w, b, *params)?,
                    Some(mut acc) => {
                        ops::conv2d_accumulate(x, w, b, *params, &mut acc)?;
                        acc
                    }
                }
            }
            Op::GroupNorm(n) => ops::group_norm(input_map(node, values, 0)?, self.norm_params(n))?,
            Op::Add => ops::add(input_map(node, values, 0)?, input_map(node, values, 1)?)?,
            Op::AvgPool2 => ops::avg_pool2(input_map(node, values, 0)?),
            Op::Subsample2 => ops::subsample2(input_map(node, values, 0)?),
            Op::Attention(a) => {
                let w = AttnWeights {
                    norm: self.affine(a.norm.gamma, a.norm.beta),
                    q: self.affine(a.q.weight, a.q.bias),
                    k: self.affine(a.k.weight, a.k.bias),
                    v: self.affine(a.v.weight, a.v.bias),
                    proj_out: self.affine(a.proj_out.weight, a.proj_out.bias),
                    groups: a.norm.groups,
                    eps: graph::NORM_EPS,
                };
                ops::attention(input_map(node, values, 0)?, w)?
            }
            Op::NearestCode { codebook } => {
                let p = input_map(node, values, 0)?;
                return Ok(Data::Tokens(TokenGrid {
                    level: 0,
                    height: p.height,
                    width: p.width,
                    tokens: ops::nearest_codes(p, self.param(*codebook))?,
                }));
            }
            Op::GatherCode { codebook } => match values[node.inputs[0].0].as_ref() {
                Some(Data::Tokens(grid)) => ops::gather_codes(grid, self.param(*codebook))?,
                _ => return Err(MISSING_INPUT),
            },
        };
        Ok(Data::Map(out))
    }

    fn norm_params(&self, n: &graph::Norm) -> GroupNormParams<'_> {
        GroupNormParams {
            gamma: self.param(n.gamma),
            beta: self.param(n.beta),
            groups: n.groups,
            eps: graph::NORM_EPS,
            swish: n.swish,
        }
    }

    fn affine(&self, weight: ParamId, bias: ParamId) -> Affine<'_> {
        Affine {
            weight: self.param(weight),
            bias: self.param(bias),
        }
    }

    /// A graph parameter; `Weights` holds every one (it is checked against the same list).
    fn param(&self, id: ParamId) -> &Tensor {
        self.weights.tensor(&self.graph.param(id).name)
    }
}

/// A program was run without a value it reads: a caller's bug, reported rather than panicking.
const MISSING_INPUT: CpuError = CpuError::Unsupported {
    op: "program",
    param: "given values",
    got: 0,
    reason: "a value the program reads was neither given nor computed",
};

/// Input `k` of `node` as an owned feature map: moved out when this node is its last reader (and
/// reads it only once), copied otherwise.
fn owned_input(
    node: &Node,
    values: &mut [Option<Data>],
    frees: &[Value],
    k: usize,
) -> Result<FeatureMap, CpuError> {
    let v = node.inputs[k];
    let read_once = node.inputs.iter().filter(|&&i| i == v).count() == 1;
    if frees.contains(&v) && read_once {
        match values[v.0].take() {
            Some(Data::Map(m)) => Ok(m),
            _ => Err(MISSING_INPUT),
        }
    } else {
        input_map(node, values, k).cloned()
    }
}

/// Input 0 of `node`, owned, which must have the three channels that mean and std describe.
fn rgb_input(
    node: &Node,
    values: &mut [Option<Data>],
    frees: &[Value],
    op: &'static str,
) -> Result<FeatureMap, CpuError> {
    let x = owned_input(node, values, frees, 0)?;
    if x.channels != 3 {
        return Err(CpuError::ShapeMismatch {
            op,
            operand: "input",
            expected: vec![3, 0, 0],
            got: vec![x.channels, x.height, x.width],
        });
    }
    Ok(x)
}

/// Input `k` of `node` as a feature map.
fn input_map<'v>(
    node: &Node,
    values: &'v [Option<Data>],
    k: usize,
) -> Result<&'v FeatureMap, CpuError> {
    match values[node.inputs[k].0].as_ref() {
        Some(Data::Map(m)) => Ok(m),
        _ => Err(MISSING_INPUT),
    }
}

fn output(p: &Program, which: Output) -> Value {
    p.output(which)
        .expect("every program of a valid config has its named outputs")
}

fn outputs(p: &Program, which: impl Iterator<Item = Output>) -> Vec<Value> {
    which.map(|o| output(p, o)).collect()
}

fn into_map(d: Data) -> Result<FeatureMap, CpuError> {
    match d {
        Data::Map(m) => Ok(m),
        Data::Tokens(_) => Err(MISSING_INPUT),
    }
}

fn into_grid(d: Data, level: usize) -> Result<TokenGrid, CpuError> {
    match d {
        Data::Tokens(grid) => Ok(TokenGrid { level, ..grid }),
        Data::Map(_) => Err(MISSING_INPUT),
    }
}

/// `(x − mean) / std` per channel, in place.
fn normalize(x: &mut FeatureMap, mean: [f32; 3], std: [f32; 3]) {
    let plane = x.plane();
    for (c, ch) in x.data.chunks_exact_mut(plane.max(1)).enumerate() {
        let (m, inv) = (mean[c], 1.0 / std[c]);
        ch.iter_mut().for_each(|v| *v = (*v - m) * inv);
    }
}

/// `clamp(x · std + mean, 0, 1)` per channel.
fn denormalize(rgb: &mut FeatureMap, mean: [f32; 3], std: [f32; 3]) {
    let plane = rgb.plane();
    for (c, ch) in rgb.data.chunks_exact_mut(plane.max(1)).enumerate() {
        let (m, s) = (mean[c], std[c]);
        ch.iter_mut()
            .for_each(|v| *v = (*v * s + m).clamp(0.0, 1.0));
    }
}
