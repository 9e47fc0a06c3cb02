//! The image-input path: arbitrary bytes as an image file (any enabled format) returns pixels or a
//! typed error, never panics, and never allocates beyond the pixel limit (the fuzzer's
//! `-rss_limit_mb` catches an allocation that follows a crafted header).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = hvq_codec::Limits { max_pixels: 1 << 22, ..hvq_codec::Limits::default() };
    if let Ok(img) = hvq_codec::RgbImage::decode(data, &limits) {
        assert!(u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels);
    }
});
