//! Is a JPEG file complete? JPEG decoders (zune-jpeg, which the `image` crate uses, and libjpeg
//! alike) decode a file cut short without an error: they pad the missing entropy-coded data with
//! zeros and return a grey- or smear-filled image. A complete file ends its last scan with an EOI
//! marker (ITU-T T.81 B.2.1), so walking the marker structure finds a cut exactly.

use std::fmt;

/// Where a JPEG file that ends before its end-of-image (EOI) marker was cut (see
/// [`CodecError::TruncatedJpeg`](crate::CodecError::TruncatedJpeg)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JpegCut {
    /// Inside the marker segment `0xFF marker` (a table, a frame or scan header, metadata) that
    /// starts at byte `offset`.
    Segment {
        /// The marker's second byte (`0xC0` a frame header, `0xC4` a Huffman table, `0xDA` a
        /// scan header, `0xE1` EXIF, …).
        marker: u8,
        /// Offset of the marker.
        offset: usize,
    },
    /// Inside the entropy-coded data of scan number `scan` (1 = the first), which starts at byte
    /// `offset`. A progressive JPEG has several scans; a baseline one usually one.
    ScanData {
        /// The scan's number, from 1.
        scan: usize,
        /// Offset of the scan's first data byte.
        offset: usize,
    },
    /// Between two segments, where the next marker should start.
    BeforeMarker,
}

impl fmt::Display for JpegCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            JpegCut::Segment { marker, offset } => {
                write!(f, "inside the {} at byte {offset}", segment_name(marker))
            }
            JpegCut::ScanData { scan, offset } => write!(
                f,
                "inside the compressed data of scan {scan} (which starts at byte {offset})"
            ),
            JpegCut::BeforeMarker => f.write_str("between two segments"),
        }
    }
}

fn segment_name(marker: u8) -> String {
    match marker {
        0xC4 => "Huffman table".into(),
        0xCC => "arithmetic-coding table".into(),
        0xC0..=0xCF => "frame header".into(),
        0xDA => "scan header".into(),
        0xDB => "quantization table".into(),
        0xDD => "restart interval".into(),
        0xE0..=0xEF => format!("APP{} metadata segment", marker - 0xE0),
        0xFE => "comment".into(),
        m => format!("segment of marker 0xFF{m:02X}"),
    }
}

/// `Ok` when the markers reach EOI (bytes after it are ignored, as every decoder does);
/// otherwise where the file was cut. `bytes` start with SOI (`FF D8`), as the format guess saw.
///
/// Only the structure is checked: a segment's length must fit in the file, and every scan's
/// entropy-coded data must be followed by a marker (`FF` then a byte other than `00` stuffing,
/// `D0`–`D7` restarts or `FF` fill). A segment with an invalid length is left to the decoder.
pub(crate) fn check_complete(bytes: &[u8]) -> Result<(), JpegCut> {
    let mut i = 2;
    let mut scans = 0;
    loop {
        // The next marker. Bytes that are not one are skipped, as libjpeg does ("extraneous
        // bytes before marker"), and so are fill bytes (any number of FF).
        while bytes.get(i).is_some_and(|&b| b != 0xFF) {
            i += 1;
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return Err(JpegCut::BeforeMarker);
        };
        let offset = i - 1;
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Markers without a segment: TEM, RSTn, SOI (and a stray stuffed zero).
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return Err(JpegCut::Segment { marker, offset });
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return Ok(());
        }
        i += len;
        if i > bytes.len() {
            return Err(JpegCut::Segment { marker, offset });
        }
        if marker == 0xDA {
            scans += 1;
            i = end_of_scan_data(bytes, i).ok_or(JpegCut::ScanData {
                scan: scans,
                offset: i,
            })?;
        }
    }
}

/// The offset of the marker that ends the entropy-coded data starting at `start`, if any.
fn end_of_scan_data(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    loop {
        let ff = i + bytes[i..].iter().position(|&b| b == 0xFF)?;
        let mut next = ff + 1;
        while bytes.get(next) == Some(&0xFF) {
            next += 1;
        }
        match bytes.get(next)? {
            0x00 | 0xD0..=0xD7 => i = next + 1,
            _ => return Some(ff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, a 4-byte comment, a scan header, `data`, then `tail`.
    fn jpeg(data: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x04, b'h', b'i'];
        b.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x00]);
        b.extend_from_slice(data);
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn a_file_ending_with_eoi_is_complete_whatever_follows() {
        let data = [1, 2, 0xFF, 0x00, 3, 0xFF, 0xD0, 4, 0xFF, 0xFF, 0x00];
        assert_eq!(check_complete(&jpeg(&data, &[0xFF, 0xD9])), Ok(()));
        assert_eq!(
            check_complete(&jpeg(&data, &[0xFF, 0xD9, 0, 0, 0xFF, 0xD8, 1])),
            Ok(())
        );
    }

    #[test]
    fn every_cut_before_eoi_is_found() {
        let full = jpeg(&[1, 2, 0xFF, 0x00, 3, 0xFF, 0xD3, 4], &[0xFF, 0xD9]);
        for len in 2..full.len() {
            assert!(check_complete(&full[..len]).is_err(), "cut at {len}");
        }
        assert_eq!(
            check_complete(&full[..6]),
            Err(JpegCut::Segment {
                marker: 0xFE,
                offset: 2
            })
        );
        assert_eq!(
            check_complete(&full[..15]),
            Err(JpegCut::ScanData {
                scan: 1,
                offset: 13
            })
        );
    }

    #[test]
    fn scans_after_the_first_are_counted() {
        // A progressive file: a table between two scans.
        let mut b = jpeg(&[7, 7], &[0xFF, 0xC4, 0x00, 0x02]);
        b.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 9, 9]);
        assert_eq!(
            check_complete(&b),
            Err(JpegCut::ScanData {
                scan: 2,
                offset: b.len() - 2
            })
        );
        b.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(check_complete(&b), Ok(()));
    }
}
