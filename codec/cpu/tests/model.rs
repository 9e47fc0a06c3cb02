//! The whole model on `tiny` random weights: shapes, ranges and refusals for every strategy.

use hvq_cpu::{CpuError, CpuModel};
use hvq_spec::InputError;
use hvq_spec::{FeatureMap, ModelConfig, Strategy, TokenGrid, random_weights};

fn model(strategy: Strategy, levels: usize) -> CpuModel {
    let cfg = ModelConfig {
        strategy,
        levels,
        ..ModelConfig::tiny()
    };
    CpuModel::new(random_weights(&cfg, 11).unwrap())
}

/// A smooth RGB ramp in [0, 1].
fn image(h: usize, w: usize) -> FeatureMap {
    let data = (0..3 * h * w)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    FeatureMap {
        channels: 3,
        height: h,
        width: w,
        data,
    }
}

#[test]
fn every_strategy_and_level_count_gives_the_documented_shapes() {
    for strategy in Strategy::ALL {
        for levels in 1..=3 {
            let m = model(strategy, levels);
            let cfg = m.config().clone();
            let (h, w) = (3 * cfg.coarsest_stride(), 2 * cfg.coarsest_stride());
            let latents = m.encode_latents(&image(h, w)).unwrap();
            assert_eq!(latents.len(), levels);
            let grids = m.tokens(&latents).unwrap();
            for (level, (p, g)) in latents.iter().zip(&grids).enumerate() {
                let f = cfg.level_stride(level);
                assert_eq!(
                    (p.channels, p.height, p.width),
                    (cfg.codebook_dim, h / f, w / f),
                    "{strategy:?} {level}"
                );
                assert_eq!(
                    (g.level, g.height, g.width, g.tokens.len()),
                    (level, h / f, w / f, h * w / f / f)
                );
                assert!(g.tokens.iter().all(|&t| (t as usize) < cfg.codebook_size));
                let rgb = m.decode(g).unwrap();
                assert_eq!((rgb.channels, rgb.height, rgb.width), (3, h, w));
                assert!(
                    rgb.data.iter().all(|v| (0.0..=1.0).contains(v)),
                    "{strategy:?} level {level}"
                );
            }
        }
    }
}

#[test]
fn encode_of_chosen_levels_equals_the_full_encode() {
    let m = model(Strategy::Pooling, 3);
    let img = image(16, 24);
    let all = m.tokens(&m.encode_latents(&img).unwrap()).unwrap();
    let some = m.encode(&img, &[2, 0]).unwrap();
    assert_eq!(some, vec![all[2].clone(), all[0].clone()]);
    assert_eq!(m.encode(&img, &[]).unwrap(), vec![]);
}

#[test]
fn encode_is_deterministic() {
    let m = model(Strategy::Pooling, 3);
    let img = image(24, 16);
    assert_eq!(
        m.encode(&img, &[0, 1, 2]).unwrap(),
        m.encode(&img, &[0, 1, 2]).unwrap()
    );
}

#[test]
fn bad_images_are_refused_with_typed_errors() {
    let m = model(Strategy::Pooling, 3);
    let gray = FeatureMap {
        channels: 1,
        height: 16,
        width: 16,
        data: vec![0.0; 256],
    };
    assert_eq!(
        m.encode(&gray, &[0]),
        Err(CpuError::Input(InputError::WrongChannels {
            expected: 3,
            got: 1
        }))
    );
    assert!(matches!(
        m.encode(&image(12, 16), &[0]),
        Err(CpuError::Input(InputError::BadImageSize {
            multiple: 8,
            ..
        }))
    ));
    assert!(matches!(
        m.encode(&image(0, 16), &[0]),
        Err(CpuError::Input(InputError::BadImageSize { .. }))
    ));
    let short = FeatureMap {
        data: vec![0.0; 5],
        ..image(16, 16)
    };
    assert!(matches!(
        m.encode_latents(&short),
        Err(CpuError::Input(InputError::BadImageSize { .. }))
    ));
    assert_eq!(
        m.encode(&image(16, 16), &[3]),
        Err(CpuError::Input(InputError::LevelOutOfRange {
            level: 3,
            levels: 3
        }))
    );
}

#[test]
fn bad_token_grids_are_refused_with_typed_errors() {
    let m = model(Strategy::Sampling, 2);
    let n = m.config().codebook_size as u32;
    let good = TokenGrid {
        level: 1,
        height: 2,
        width: 3,
        tokens: vec![0, 1, 2, 3, 4, n - 1],
    };
    assert!(m.decode(&good).is_ok());
    let bad = TokenGrid {
        tokens: vec![0, 1, n, 3, 4, 5],
        ..good.clone()
    };
    assert_eq!(
        m.decode(&bad),
        Err(CpuError::Input(InputError::TokenOutOfRange {
            position: 2,
            token: n,
            entries: n as usize
        }))
    );
    let short = TokenGrid {
        tokens: vec![0; 5],
        ..good.clone()
    };
    assert!(matches!(
        m.decode(&short),
        Err(CpuError::Input(InputError::GridSize { got: 5, .. }))
    ));
    let empty = TokenGrid {
        height: 0,
        width: 3,
        tokens: vec![],
        ..good.clone()
    };
    assert!(matches!(
        m.decode(&empty),
        Err(CpuError::Input(InputError::GridSize { .. }))
    ));
    let deep = TokenGrid { level: 2, ..good };
    assert_eq!(
        m.decode(&deep),
        Err(CpuError::Input(InputError::LevelOutOfRange {
            level: 2,
            levels: 2
        }))
    );
    let wrong = vec![FeatureMap::zeros(m.config().codebook_dim + 1, 2, 2)];
    assert!(matches!(m.tokens(&wrong), Err(CpuError::BadLatents { .. })));
}
