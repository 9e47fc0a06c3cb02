//! What a model accepts as input, checked in one place so that every backend accepts and
//! refuses exactly the same images, levels and token grids (each maps [`InputError`] into its
//! own error type).

use crate::{FeatureMap, ModelConfig, TokenGrid};

/// Why an input does not fit a model. Exhaustive on purpose: a new check must be mapped by
/// every backend's error type, which the compiler then asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// An image has the wrong number of channels.
    #[error("image has {got} channels, expected {expected}")]
    WrongChannels {
        /// Channels the model takes.
        expected: usize,
        /// Channels given.
        got: usize,
    },
    /// An image side is zero or not a multiple of the coarsest stride, or its data length is
    /// not `channels × height × width`.
    #[error(
        "image is {height}×{width}: its sides must be positive multiples of {multiple} (edge-pad first)"
    )]
    BadImageSize {
        /// Rows given.
        height: usize,
        /// Columns given.
        width: usize,
        /// What both sides must be a multiple of.
        multiple: usize,
    },
    /// A level the model does not have.
    #[error("level {level} does not exist: the model has {levels} levels")]
    LevelOutOfRange {
        /// The level asked for.
        level: usize,
        /// Levels of the model.
        levels: usize,
    },
    /// A token grid that is empty or whose token count is not `height × width`.
    #[error("token grid of {height}×{width} holds {got} tokens")]
    GridSize {
        /// Rows claimed.
        height: usize,
        /// Columns claimed.
        width: usize,
        /// Tokens present.
        got: usize,
    },
    /// A token that is not an index into the codebook.
    #[error("token {token} at position {position} is not below the codebook size {entries}")]
    TokenOutOfRange {
        /// Row-major position in the grid.
        position: usize,
        /// The token value.
        token: u32,
        /// Codebook entries.
        entries: usize,
    },
}

impl InputError {
    /// The variant's name (`"LevelOutOfRange"`, …): a stable, machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            InputError::WrongChannels { .. } => "WrongChannels",
            InputError::BadImageSize { .. } => "BadImageSize",
            InputError::LevelOutOfRange { .. } => "LevelOutOfRange",
            InputError::GridSize { .. } => "GridSize",
            InputError::TokenOutOfRange { .. } => "TokenOutOfRange",
        }
    }
}

impl ModelConfig {
    /// Every level in `levels` exists.
    pub fn check_levels(&self, levels: &[usize]) -> Result<(), InputError> {
        match levels.iter().find(|&&l| l >= self.levels) {
            Some(&level) => Err(InputError::LevelOutOfRange {
                level,
                levels: self.levels,
            }),
            None => Ok(()),
        }
    }

    /// `image` is what the encoder takes: [`ModelConfig::in_channels`] channels, sides that are
    /// positive multiples of [`ModelConfig::coarsest_stride`], and a matching data length.
    pub fn check_image(&self, image: &FeatureMap) -> Result<(), InputError> {
        if image.channels != self.in_channels {
            return Err(InputError::WrongChannels {
                expected: self.in_channels,
                got: image.channels,
            });
        }
        let m = self.coarsest_stride();
        let bad = |n: usize| n == 0 || !n.is_multiple_of(m);
        if bad(image.height)
            || bad(image.width)
            || image.data.len() != image.channels * image.plane()
        {
            return Err(InputError::BadImageSize {
                height: image.height,
                width: image.width,
                multiple: m,
            });
        }
        Ok(())
    }

    /// `grid` is what its level's decoder takes: an existing level and a valid grid of
    /// codebook indices ([`TokenGrid::check`]).
    pub fn check_grid(&self, grid: &TokenGrid) -> Result<(), InputError> {
        self.check_levels(&[grid.level])?;
        grid.check(self.codebook_size)
    }
}

impl TokenGrid {
    /// The grid is not empty, holds `height × width` tokens, and each is below `entries`.
    pub fn check(&self, entries: usize) -> Result<(), InputError> {
        if self.height == 0 || self.width == 0 || self.tokens.len() != self.height * self.width {
            return Err(InputError::GridSize {
                height: self.height,
                width: self.width,
                got: self.tokens.len(),
            });
        }
        match self.tokens.iter().position(|&t| t as usize >= entries) {
            Some(position) => Err(InputError::TokenOutOfRange {
                position,
                token: self.tokens[position],
                entries,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_no_backend_can_run() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let m = cfg.coarsest_stride();
        let ok = FeatureMap::zeros(3, m, 2 * m);
        assert_eq!(cfg.check_image(&ok), Ok(()));
        let two = FeatureMap::zeros(2, m, m);
        assert!(matches!(
            cfg.check_image(&two),
            Err(InputError::WrongChannels { got: 2, .. })
        ));
        for (h, w) in [(0, m), (m + 1, m)] {
            let bad = FeatureMap::zeros(3, h, w);
            assert!(matches!(
                cfg.check_image(&bad),
                Err(InputError::BadImageSize { .. })
            ));
        }
        let mut short = ok.clone();
        short.data.pop();
        assert!(matches!(
            cfg.check_image(&short),
            Err(InputError::BadImageSize { .. })
        ));
        assert_eq!(
            cfg.check_levels(&[0, cfg.levels]),
            Err(InputError::LevelOutOfRange {
                level: cfg.levels,
                levels: cfg.levels
            })
        );
        let grid = |tokens: Vec<u32>| TokenGrid {
            level: 0,
            height: 2,
            width: 2,
            tokens,
        };
        assert_eq!(cfg.check_grid(&grid(vec![0; 4])), Ok(()));
        assert!(matches!(
            cfg.check_grid(&grid(vec![0; 3])),
            Err(InputError::GridSize { got: 3, .. })
        ));
        let n = cfg.codebook_size as u32;
        assert!(matches!(
            cfg.check_grid(&grid(vec![0, 0, n, 0])),
            Err(InputError::TokenOutOfRange { position: 2, .. })
        ));
        let empty = TokenGrid {
            level: 0,
            height: 0,
            width: 0,
            tokens: vec![],
        };
        assert!(matches!(empty.check(4), Err(InputError::GridSize { .. })));
    }
}
