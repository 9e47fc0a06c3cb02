//! [`RgbImage`]: the pixel type of the API, with conversions to and from the `image` crate and
//! browser-style RGBA buffers.

mod jpeg;

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder};

use crate::{CodecError, Limits, Result};

pub use jpeg::JpegCut;

/// How [`RgbImage::decode_with`] turns an image file into opaque RGB pixels.
///
/// ```
/// use hvq_codec::DecodeOptions;
/// let opts = DecodeOptions::default().background([0, 0, 0]);
/// assert_eq!(opts.background_color(), [0, 0, 0]);
/// assert!(opts.orientation_applied());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    background: [u8; 3],
    apply_orientation: bool,
}

impl Default for DecodeOptions {
    /// A white background, EXIF orientation applied.
    fn default() -> Self {
        DecodeOptions {
            background: [255, 255, 255],
            apply_orientation: true,
        }
    }
}

impl DecodeOptions {
    /// The colour (R, G, B) that pixels with alpha are composited over. Default white, as a page
    /// shows a transparent image. The model was trained on opaque images, so alpha cannot pass
    /// through; dropping it would show whatever colour a transparent pixel happens to store
    /// (often black).
    pub fn background(mut self, rgb: [u8; 3]) -> Self {
        self.background = rgb;
        self
    }

    /// Whether to rotate and flip the pixels as the file's EXIF orientation says (default true),
    /// so that a phone photo comes out upright, as viewers show it.
    pub fn apply_orientation(mut self, apply: bool) -> Self {
        self.apply_orientation = apply;
        self
    }

    /// The background colour.
    pub fn background_color(&self) -> [u8; 3] {
        self.background
    }

    /// Whether EXIF orientation is applied.
    pub fn orientation_applied(&self) -> bool {
        self.apply_orientation
    }
}

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
    /// Alpha is ignored, not composited: each pixel keeps the colour stored under its alpha, which
    /// for a fully transparent pixel is often black. For images that may have transparency use
    /// [`RgbImage::from_rgba8_over`].
    ///
    /// Errors: as [`RgbImage::from_rgba8_over`].
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

    /// Composites an RGBA8 buffer with straight (not premultiplied) alpha, as in a browser's
    /// `ImageData`, over `background` (R, G, B): `out = (c·a + bg·(255 − a)) / 255`, rounded.
    ///
    /// Errors: [`CodecError::EmptyImage`] for a zero size, [`CodecError::BufferSize`] when the
    /// length is not `width * height * 4`.
    pub fn from_rgba8_over(
        width: u32,
        height: u32,
        rgba: &[u8],
        background: [u8; 3],
    ) -> Result<Self> {
        check_buffer(width, height, 4, rgba.len())?;
        Ok(RgbImage {
            width,
            height,
            data: composite(rgba, background),
        })
    }

    /// Decodes an image file in any format enabled in this build (PNG, JPEG, WebP, BMP, GIF,
    /// TIFF) with [`DecodeOptions::default`]: EXIF orientation applied, transparency composited
    /// over white. See [`RgbImage::decode_with`].
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self> {
        Self::decode_with(bytes, limits, &DecodeOptions::default())
    }

    /// Decodes an image file, checking its size against `limits` before decoding pixels, then
    /// applies its EXIF orientation and composites alpha over a background as `options` say.
    ///
    /// Errors: [`CodecError::ImageTooLarge`] (from the file's header, before any pixel is
    /// decoded), [`CodecError::TruncatedJpeg`] for a JPEG cut short (decoders would pad it with
    /// grey and return no error), [`CodecError::ImageDecode`] for anything the format's decoder
    /// refuses (unknown format, damaged or truncated PNG, WebP, GIF, BMP, TIFF data).
    pub fn decode_with(bytes: &[u8], limits: &Limits, options: &DecodeOptions) -> Result<Self> {
        let io = |e| CodecError::ImageDecode(image::ImageError::IoError(e));
        let reader = image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(io)?;
        // A walk over the markers, no allocation: a cut file is named as such, even when the
        // cut is inside the headers.
        if reader.format() == Some(image::ImageFormat::Jpeg) {
            jpeg::check_complete(bytes).map_err(|cut| CodecError::TruncatedJpeg {
                len: bytes.len(),
                cut,
            })?;
        }
        // The header alone first, so a 100000×100000 PNG is refused before allocation. Rotating
        // by the EXIF orientation keeps width × height, so this also bounds the upright image.
        let mut decoder = reader.into_decoder().map_err(CodecError::ImageDecode)?;
        let (w, h) = decoder.dimensions();
        crate::options::check_image(limits, w.into(), h.into())?;
        let mut lim = image::Limits::default();
        lim.max_image_width = Some(w);
        lim.max_image_height = Some(h);
        decoder.set_limits(lim).map_err(CodecError::ImageDecode)?;
        let orientation = if options.apply_orientation {
            decoder.orientation().unwrap_or_else(|e| {
                // Damaged EXIF metadata is no reason to refuse the pixels.
                log::warn!("ignoring the image's unreadable EXIF orientation: {e}");
                image::metadata::Orientation::NoTransforms
            })
        } else {
            image::metadata::Orientation::NoTransforms
        };
        let img = DynamicImage::from_decoder(decoder).map_err(CodecError::ImageDecode)?;
        let rgb = if img.color().has_alpha() {
            let rgba = img.into_rgba8();
            let (w, h) = rgba.dimensions();
            let data = composite(rgba.as_raw(), options.background);
            image::RgbImage::from_raw(w, h, data).expect("3 bytes for every 4")
        } else {
            img.into_rgb8()
        };
        let mut img = DynamicImage::ImageRgb8(rgb);
        img.apply_orientation(orientation);
        Ok(img.into_rgb8().into())
    }

    /// Writes the image in `format` (PNG, JPEG, WebP (lossless), BMP, GIF, TIFF).
    pub fn encode_as(&self, format: image::ImageFormat) -> Result<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        // A view of the pixels, not a copy: a decoded 48-megapixel photo is 144 MB.
        image::ImageBuffer::<image::Rgb<u8>, &[u8]>::from_raw(self.width, self.height, &self.data)
            .expect("buffer length is checked on construction")
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

/// RGB of straight-alpha RGBA pixels over `bg`, rounded to nearest.
fn composite(rgba: &[u8], bg: [u8; 3]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = u32::from(p[3]);
            let over =
                |c: u8, b: u8| ((u32::from(c) * a + u32::from(b) * (255 - a) + 127) / 255) as u8;
            [over(p[0], bg[0]), over(p[1], bg[1]), over(p[2], bg[2])]
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 32×16 JPEG, left half red, right half blue, with an EXIF APP1 segment saying
    /// `orientation` (1–8) inserted after SOI.
    fn jpeg_with_orientation(orientation: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(32, 16, |x, _| {
            image::Rgb(if x < 16 { [255, 0, 0] } else { [0, 0, 255] })
        });
        let jpeg = RgbImage::from(img)
            .encode_as(image::ImageFormat::Jpeg)
            .unwrap();
        // "Exif\0\0", a little-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT.
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        exif.extend_from_slice(&[orientation, 0, 0, 0, 0, 0, 0, 0]);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&(exif.len() as u16 + 2).to_be_bytes());
        out.extend_from_slice(&exif);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    fn pixel(img: &RgbImage, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * img.width() + x) * 3) as usize;
        img.as_bytes()[i..i + 3].try_into().unwrap()
    }

    #[test]
    fn exif_orientation_turns_the_image_upright() {
        let bytes = jpeg_with_orientation(6); // rotate 90° clockwise to display
        let upright = RgbImage::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!((upright.width(), upright.height()), (16, 32));
        // The left (red) half is now on top.
        assert!(pixel(&upright, 8, 4)[0] > 200 && pixel(&upright, 8, 4)[2] < 60);
        assert!(pixel(&upright, 8, 28)[2] > 200 && pixel(&upright, 8, 28)[0] < 60);
        let raw = DecodeOptions::default().apply_orientation(false);
        let stored = RgbImage::decode_with(&bytes, &Limits::default(), &raw).unwrap();
        assert_eq!((stored.width(), stored.height()), (32, 16));
        let plain = RgbImage::decode(&jpeg_with_orientation(1), &Limits::default()).unwrap();
        assert_eq!(plain, stored);
    }

    #[test]
    fn the_pixel_limit_holds_for_rotated_images() {
        let limits = Limits {
            max_pixels: 32 * 16 - 1,
            ..Limits::default()
        };
        assert!(matches!(
            RgbImage::decode(&jpeg_with_orientation(6), &limits),
            Err(CodecError::ImageTooLarge { limit, .. }) if limit == 32 * 16 - 1
        ));
    }

    #[test]
    fn alpha_is_composited_over_the_background() {
        let rgba = [0, 0, 0, 128, 200, 100, 50, 255, 9, 9, 9, 0];
        let img = RgbImage::from_rgba8_over(3, 1, &rgba, [255, 255, 255]).unwrap();
        assert_eq!(
            img.as_bytes(),
            &[127, 127, 127, 200, 100, 50, 255, 255, 255]
        );
        let dropped = RgbImage::from_rgba8(3, 1, &rgba).unwrap();
        assert_eq!(dropped.as_bytes(), &[0, 0, 0, 200, 100, 50, 9, 9, 9]);

        let png = image::RgbaImage::from_raw(3, 1, rgba.to_vec()).unwrap();
        let mut file = Cursor::new(Vec::new());
        png.write_to(&mut file, image::ImageFormat::Png).unwrap();
        let file = file.into_inner();
        assert_eq!(RgbImage::decode(&file, &Limits::default()).unwrap(), img);
        let black = DecodeOptions::default().background([0, 0, 0]);
        let on_black = RgbImage::decode_with(&file, &Limits::default(), &black).unwrap();
        assert_eq!(on_black.as_bytes(), &[0, 0, 0, 200, 100, 50, 0, 0, 0]);
    }

    #[test]
    fn truncated_jpegs_are_a_typed_error() {
        let bytes = jpeg_with_orientation(1);
        for cut in [3, 40, bytes.len() / 2, bytes.len() - 1] {
            let err = RgbImage::decode(&bytes[..cut], &Limits::default()).unwrap_err();
            assert!(
                matches!(err, CodecError::TruncatedJpeg { len, .. } if len == cut),
                "cut {cut}: {err:?}"
            );
        }
    }
}
