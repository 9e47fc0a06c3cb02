//! Writing `.npy` arrays (NumPy format version 1.0) of token indices, by hand: the format is a
//! magic string, a Python-literal header, and the raw little-endian data.

use std::io::{self, Write};

/// Element type of a token array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// Little-endian u16 (`<u2`): any codebook of up to 65 536 entries.
    U16,
    /// Little-endian u32 (`<u4`).
    U32,
}

impl Dtype {
    /// The smallest dtype that holds every index of a codebook of `codebook_size` entries.
    pub fn for_codebook(codebook_size: usize) -> Self {
        if codebook_size <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    fn descr(self) -> &'static str {
        match self {
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
        }
    }
}

/// Writes `values` as a C-order array of `shape`.
pub fn write(
    out: &mut impl Write,
    shape: &[usize],
    dtype: Dtype,
    values: &[u32],
) -> io::Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    out.write_all(&header(shape, dtype))?;
    let mut buf = Vec::with_capacity(values.len() * 4);
    for &v in values {
        match dtype {
            // Callers pick the dtype from the codebook size, so indices fit.
            Dtype::U16 => buf.extend_from_slice(&(v as u16).to_le_bytes()),
            Dtype::U32 => buf.extend_from_slice(&v.to_le_bytes()),
        }
    }
    out.write_all(&buf)
}

/// Magic, version 1.0, header length, and the header dict padded with spaces so the data starts
/// at a multiple of 64 bytes (what NumPy itself writes, allowing aligned memory maps).
fn header(shape: &[usize], dtype: Dtype) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    // A 1-tuple needs its trailing comma in Python syntax.
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.descr(),
        shape
    );
    let prefix = 6 + 2 + 2; // magic, version, u16 header length
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    dict.push_str(&" ".repeat(total - prefix - dict.len() - 1));
    dict.push('\n');
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parsable() {
        let h = header(&[3, 5], Dtype::U16);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(len + 10, h.len());
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<u2', 'fortran_order': False, 'shape': (3, 5), }"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn one_dimensional_shape_has_trailing_comma() {
        let h = header(&[7], Dtype::U32);
        assert!(
            std::str::from_utf8(&h[10..])
                .unwrap()
                .contains("'shape': (7,)")
        );
    }

    #[test]
    fn data_follows_header_little_endian() {
        let mut out = Vec::new();
        write(&mut out, &[2], Dtype::U16, &[1, 513]).unwrap();
        assert_eq!(&out[out.len() - 4..], &[1, 0, 1, 2]);
    }
}
