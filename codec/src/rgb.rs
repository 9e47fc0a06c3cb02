//! [`RgbImage`]: the pixel type of the API, with conversions to and from the `image` crate and
//! browser-style RGBA buffers.

use std::io::Cursor;

use crate::{CodecError, Limits, Result};

/// An 8-bit RGB image, row-major, 3 bytes per pixel, no padding between rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wraps an RGB8 buffer of `width * height * 3` bytes.
    ///
    /// Errors: [`CodecError::EmptyImage`] for a zero size, [`CodecError::BufferSize`] when the
    /// length does not match.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        check_buffer(width, height, 3, data.len())?;
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Converts an RGBA8 buffer (e.g. a browser's `ImageData`), dropping alpha.
    ///
    /// Alpha is ignored rather than composited: the model was trained on opaque images, and
    /// callers who want a background colour can composite before calling.
    pub fn from_rgba8(width: u32, height: u32, rgba: &[u8]) -> Result<Self> {
        check_buffer(width, height, 4, rgba.len())?;
        let data = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Decodes an image file in any format enabled in this build (PNG, JPEG, WebP, BMP, GIF,
    /// TIFF), checking its size against `limits` before decoding pixels.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let reader = || image::ImageReader::new(Cursor::new(bytes)).with_guessed_format();
        // Read the header alone first, so a 100000×100000 PNG is refused before allocation.
        let (w, h) = reader()
            .map_err(|e| CodecError::ImageDecode(image::ImageError::IoError(e)))?
            .into_dimensions()
            .map_err(CodecError::ImageDecode)?;
        limits.check_image(w.into(), h.into())?;
        let mut r = reader().map_err(|e| CodecError::ImageDecode(image::ImageError::IoError(e)))?;
        let mut lim = image::Limits::default();
        lim.max_image_width = Some(w);
        lim.max_image_height = Some(h);
        r.limits(lim);
        let img = r.decode().map_err(CodecError::ImageDecode)?;
        Ok(Self::from(&img))
    }

    /// Writes the image in `format` (PNG, JPEG, WebP (lossless), BMP, GIF, TIFF).
    pub fn encode_as(&self, format: image::ImageFormat) -> Result<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        self.to_image()
            .write_to(&mut out, format)
            .map_err(CodecError::ImageEncode)?;
        Ok(out.into_inner())
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The RGB8 bytes, row-major.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The RGB8 bytes, row-major, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// RGBA8 bytes with opaque alpha (for a browser canvas).
    pub fn to_rgba8(&self) -> Vec<u8> {
        self.data
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect()
    }

    /// A copy as an `image::RgbImage`.
    pub fn to_image(&self) -> image::RgbImage {
        image::RgbImage::from_raw(self.width, self.height, self.data.clone())
            .expect("buffer length is checked on construction")
    }
}

fn check_buffer(width: u32, height: u32, channels: u32, got: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(CodecError::EmptyImage { width, height });
    }
    let expected = (width as usize)
        .saturating_mul(height as usize)
        .saturating_mul(channels as usize);
    if got != expected {
        return Err(CodecError::BufferSize {
            width,
            height,
            channels,
            expected,
            got,
        });
    }
    Ok(())
}

impl From<image::RgbImage> for RgbImage {
    fn from(img: image::RgbImage) -> Self {
        RgbImage {
            width: img.width(),
            height: img.height(),
            data: img.into_raw(),
        }
    }
}

impl From<&image::DynamicImage> for RgbImage {
    fn from(img: &image::DynamicImage) -> Self {
        img.to_rgb8().into()
    }
}

impl From<image::DynamicImage> for RgbImage {
    fn from(img: image::DynamicImage) -> Self {
        img.into_rgb8().into()
    }
}

impl From<RgbImage> for image::RgbImage {
    fn from(img: RgbImage) -> Self {
        image::RgbImage::from_raw(img.width, img.height, img.data)
            .expect("buffer length is checked on construction")
    }
}
