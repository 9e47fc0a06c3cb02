//! Plain data types passed between the crates: feature maps and token grids.

/// One image or feature map, channel-major (CHW), f32, batch of one.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels * height * width` values, index `(c * height + y) * width + x`.
    pub data: Vec<f32>,
}

impl FeatureMap {
    /// A zero-filled map.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        FeatureMap {
            channels,
            height,
            width,
            data: vec![0.0; channels * height * width],
        }
    }

    /// Values per channel plane.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Value at `(c, y, x)`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }
}

/// The tokens of one level: a row-major grid of codebook indices (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenGrid {
    /// Level index, 0 = finest.
    pub level: usize,
    /// Rows of the grid.
    pub height: usize,
    /// Columns of the grid.
    pub width: usize,
    /// `height * width` codebook indices, row-major.
    pub tokens: Vec<u32>,
}
