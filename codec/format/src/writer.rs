//! Writing a file.

use hvq_spec::TokenGrid;

use crate::{FormatError, Header, Limits, Priors, chunk};

/// Encodes `grids` as a `.hvq` file.
///
/// `grids` may be any subset of the model's levels but must be ordered coarsest first (strictly
/// decreasing level). Each grid must have the size [`Header::grid_dims`] gives, `height * width` tokens,
/// and every token below the priors' codebook size. `header.priors_hash` must be `priors.hash()`.
/// A chunk is parent-coded when its parent level is the chunk before and that makes it smaller.
pub fn write_file(
    header: &Header,
    grids: &[TokenGrid],
    priors: &Priors,
) -> Result<Vec<u8>, FormatError> {
    // The caller's own header: its field rules are checked, not the limits meant for input.
    header.validate(&Limits::unlimited())?;
    if header.priors_hash != priors.hash() {
        return Err(FormatError::PriorsMismatch {
            expected: priors.hash(),
            got: header.priors_hash,
        });
    }
    if usize::from(header.model_levels) != priors.levels() {
        return Err(FormatError::PriorsLevels {
            priors_levels: priors.levels(),
            model_levels: header.model_levels.into(),
        });
    }
    let mut out = header.to_bytes().to_vec();
    let mut previous: Option<&TokenGrid> = None;
    for grid in grids {
        check_grid(header, grid, previous, priors)?;
        let parent = previous.filter(|p| p.level == grid.level + 1);
        chunk::write_chunk(&mut out, grid, parent, priors)?;
        previous = Some(grid);
    }
    Ok(out)
}

fn check_grid(
    header: &Header,
    grid: &TokenGrid,
    previous: Option<&TokenGrid>,
    priors: &Priors,
) -> Result<(), FormatError> {
    let level = grid.level;
    let model_levels = usize::from(header.model_levels);
    let expected = header
        .grid_dims(level)
        .ok_or(FormatError::LevelOutOfRange {
            offset: 0,
            level,
            model_levels,
        })?;
    if let Some(p) = previous
        && level >= p.level
    {
        return Err(FormatError::LevelOrder {
            offset: 0,
            previous: p.level,
            level,
        });
    }
    let got = (grid.height as u64, grid.width as u64);
    // Chunk headers store the sizes as u32.
    if got != expected || got.0 > u32::MAX.into() || got.1 > u32::MAX.into() {
        return Err(FormatError::GridSize {
            level,
            expected,
            got,
        });
    }
    if grid.tokens.len() as u64 != got.0 * got.1 {
        return Err(FormatError::TokenCount {
            level,
            expected: got.0 * got.1,
            got: grid.tokens.len() as u64,
        });
    }
    let n = priors.codebook_size();
    if let Some((index, &token)) = grid
        .tokens
        .iter()
        .enumerate()
        .find(|&(_, &t)| t as usize >= n)
    {
        return Err(FormatError::TokenOutOfRange {
            level,
            index,
            token,
            codebook_size: n,
        });
    }
    Ok(())
}
