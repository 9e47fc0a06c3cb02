//! # hvq-wasm
//!
//! wasm-bindgen bindings of [`hvq_codec`] for browsers. An adapter only: every model, image and file
//! rule lives in `hvq-codec`; this crate converts JavaScript values to its types and its typed errors
//! to JavaScript `Error`s.
//!
//! ```js
//! import init, { HvqCodec } from './pkg/hvq_wasm.js';
//! await init();
//! const weights = new Uint8Array(await (await fetch('model.safetensors')).arrayBuffer());
//! const codec = await HvqCodec.create(weights, 'auto');      // WebGPU when present, else CPU
//! const hvq = await codec.encode(imageData);                 // a scalable .hvq file, coarsest level first
//! const { width, height, rgba, level } = await codec.decode(hvq.subarray(0, n)); // any prefix: best complete level
//! codec.free();                                              // releases the GPU buffers now
//! ```
//!
//! Errors are JavaScript `Error`s named `HvqError`; `message` is the codec's message with its causes
//! (`outer: cause: cause`), and `kind` names the [`CodecError`] variant (e.g. `FingerprintMismatch`,
//! `Format.BadMagic`) for code that wants to branch on it.
#![deny(missing_docs)]

use std::rc::Rc;

use hvq_codec::{
    Backend, BackendKind, Codec, CodecError, DecodedImage, FileInfo, LevelSelection, RgbImage,
    TokenGrid, Tokens,
};
use js_sys::{Array, Object, Reflect, Uint8Array, Uint8ClampedArray, Uint32Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Which backend `HvqCodec.create` uses: WebGPU when there is an adapter, else the CPU (`"auto"`). */
export type HvqBackend = "auto" | "webgpu" | "cpu";

/** The WebGPU kernels' activations: `"f32"` (default; the native tokens) or `"f16"` (needs the adapter's `shader-f16`). */
export type HvqPrecision = "f32" | "f16";

/** Pixels to encode: a canvas `ImageData`, or any RGBA8 buffer with its size. */
export type HvqImageInput = ImageData | { data: Uint8Array | Uint8ClampedArray; width: number; height: number };

/** One level's tokens: a row-major grid of codebook indices (level 0 = finest). */
export interface HvqTokenGrid {
  level: number;
  width: number;
  height: number;
  tokens: Uint32Array;
}

/** An image decoded from tokens, at the original size, as opaque RGBA8 (ready for `new ImageData`). */
export interface HvqDecodedImage {
  width: number;
  height: number;
  rgba: Uint8ClampedArray;
  /** The level that was decoded (0 = finest). */
  level: number;
  /** Whether the input ended inside a chunk (a progressive prefix); the partial chunk was ignored. */
  truncated: boolean;
}

/** One level's chunk in a `.hvq` file (file order is coarsest first). */
export interface HvqLevelInfo {
  level: number;
  gridWidth: number;
  gridHeight: number;
  /** Byte offset of the chunk in the file. */
  offset: number;
  /** Bytes of the chunk (chunk header, entropy-coded tokens, checksum). */
  bytes: number;
  /** The chunk's bits per pixel of the original image. */
  bitsPerPixel: number;
  /** Bits per pixel of the smallest prefix that decodes this level. */
  prefixBitsPerPixel: number;
  /** Share of tokens equal to their parent when the chunk is parent-coded; null for plain coding. */
  sameAsParent: number | null;
}

/** What a `.hvq` file holds. */
export interface HvqInfo {
  width: number;
  height: number;
  /** Fingerprint (hex) of the model that made the file. */
  fingerprint: string;
  modelLevels: number;
  coarsestStride: number;
  /** Bytes of the file header (before the first chunk). */
  headerBytes: number;
  /** Complete chunks, in file order (coarsest first). */
  levels: HvqLevelInfo[];
  /** Bytes after the last complete chunk (a cut-off progressive prefix); 0 for a whole file. */
  trailingBytes: number;
  totalBytes: number;
}
"#;

/// Forwards `log` records of the codec (e.g. why `auto` fell back to the CPU) to the browser console.
struct ConsoleLog;

impl log::Log for ConsoleLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // hvq's own records from `info` up; wgpu and others only when they warn.
        m.level()
            <= if m.target().starts_with("hvq") {
                log::Level::Info
            } else {
                log::Level::Warn
            }
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let msg = JsValue::from_str(&format!("hvq {}: {}", r.level(), r.args()));
            match r.level() {
                log::Level::Error => web_sys::console::error_1(&msg),
                log::Level::Warn => web_sys::console::warn_1(&msg),
                _ => web_sys::console::info_1(&msg),
            }
        }
    }
    fn flush(&self) {}
}

static LOGGER: ConsoleLog = ConsoleLog;

/// Runs when the module is instantiated: console logging and readable panic messages.
#[wasm_bindgen(start)]
fn start() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&JsValue::from_str(&format!(
            "hvq-wasm panicked (a bug): {info}"
        )));
    }));
}

/// A JS `Error` from a typed error: name `HvqError`, the full cause chain as message, the variant as `kind`.
fn js_error(err: &(dyn std::error::Error + 'static), kind: &str) -> JsValue {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    let e = js_sys::Error::new(&msg);
    e.set_name("HvqError");
    let _ = Reflect::set(&e, &"kind".into(), &kind.into());
    e.into()
}

fn codec_error(err: CodecError) -> JsValue {
    js_error(&err, &err.kind_path())
}

/// A JS argument the bindings cannot use (wrong type or shape), as an `HvqError` of kind `Argument`.
fn argument_error(msg: String) -> JsValue {
    #[derive(Debug)]
    struct ArgumentError(String);
    impl std::fmt::Display for ArgumentError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for ArgumentError {}
    js_error(&ArgumentError(msg), "Argument")
}

/// A progress callback for the codec that calls the JS function `f(done, total)`, if one was given.
/// An exception thrown by `f` is ignored: progress display must not fail the work.
fn reporter(f: Option<js_sys::Function>) -> impl FnMut(hvq_codec::Progress) {
    move |p| {
        if let Some(f) = &f {
            let _ = f.call2(
                &JsValue::NULL,
                &(p.done as u32).into(),
                &(p.total as u32).into(),
            );
        }
    }
}

fn u32_arg(v: &JsValue, what: &str) -> Result<u32, JsValue> {
    v.as_f64()
        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
        .map(|f| f as u32)
        .ok_or_else(|| argument_error(format!("{what} must be a non-negative integer, got {v:?}")))
}

/// Reads `{data, width, height}` (an `ImageData` or a plain object) into an [`RgbImage`].
fn image_arg(image: &JsValue) -> Result<RgbImage, JsValue> {
    let get = |k: &str| Reflect::get(image, &k.into()).unwrap_or(JsValue::UNDEFINED);
    let width = u32_arg(&get("width"), "image.width")?;
    let height = u32_arg(&get("height"), "image.height")?;
    let data = get("data");
    if !(data.is_instance_of::<Uint8ClampedArray>() || data.is_instance_of::<Uint8Array>()) {
        return Err(argument_error(
            "image.data must be a Uint8ClampedArray or Uint8Array of RGBA8 pixels".into(),
        ));
    }
    let rgba = Uint8Array::new_with_byte_offset_and_length(
        &Reflect::get(&data, &"buffer".into())?,
        u32_arg(
            &Reflect::get(&data, &"byteOffset".into())?,
            "image.data.byteOffset",
        )?,
        u32_arg(&Reflect::get(&data, &"length".into())?, "image.data.length")?,
    )
    .to_vec();
    RgbImage::from_rgba8(width, height, &rgba).map_err(codec_error)
}

fn levels_arg(levels: Option<Vec<u32>>) -> LevelSelection {
    match levels {
        None => LevelSelection::All,
        Some(l) => LevelSelection::Only(l.into_iter().map(|l| l as usize).collect()),
    }
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a data property on a fresh plain object cannot fail.
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

fn grid_to_js(grid: &TokenGrid) -> JsValue {
    let o = Object::new();
    set(&o, "level", grid.level as u32);
    set(&o, "width", grid.width as u32);
    set(&o, "height", grid.height as u32);
    set(&o, "tokens", Uint32Array::from(grid.tokens.as_slice()));
    o.into()
}

fn grids_to_js(tokens: &Tokens) -> JsValue {
    tokens
        .grids
        .iter()
        .map(grid_to_js)
        .collect::<Array>()
        .into()
}

fn image_to_js(image: &RgbImage, level: usize, truncated: bool) -> JsValue {
    let o = Object::new();
    set(&o, "width", image.width());
    set(&o, "height", image.height());
    set(
        &o,
        "rgba",
        Uint8ClampedArray::from(image.to_rgba8().as_slice()),
    );
    set(&o, "level", level as u32);
    set(&o, "truncated", truncated);
    o.into()
}

fn info_to_js(info: &FileInfo) -> JsValue {
    let chunks: usize = info.levels.iter().map(|l| l.bytes).sum();
    let header = info.total_bytes - info.trailing_bytes - chunks;
    let o = Object::new();
    set(&o, "width", info.width);
    set(&o, "height", info.height);
    set(&o, "fingerprint", info.fingerprint_hex());
    set(&o, "modelLevels", info.model_levels as u32);
    set(&o, "coarsestStride", info.coarsest_stride);
    set(&o, "headerBytes", header as u32);
    let mut offset = header;
    let levels: Array = info
        .levels
        .iter()
        .map(|l| {
            let c = Object::new();
            set(&c, "level", l.level as u32);
            set(&c, "gridWidth", l.grid_width as u32);
            set(&c, "gridHeight", l.grid_height as u32);
            set(&c, "offset", offset as u32);
            set(&c, "bytes", l.bytes as u32);
            set(&c, "bitsPerPixel", l.bits_per_pixel);
            set(&c, "prefixBitsPerPixel", l.prefix_bits_per_pixel);
            let same = l.same_as_parent.map_or(JsValue::NULL, JsValue::from);
            set(&c, "sameAsParent", same);
            set(&c, "contextCoded", l.context_coded);
            offset += l.bytes;
            JsValue::from(c)
        })
        .collect();
    set(&o, "levels", levels);
    set(&o, "trailingBytes", info.trailing_bytes as u32);
    set(&o, "totalBytes", info.total_bytes as u32);
    o.into()
}

/// Reads the header and chunk table of a `.hvq` file without a model (no checksum or token checks;
/// use [`HvqCodec::info`] for a full check against a model).
#[wasm_bindgen(js_name = inspectHvq, unchecked_return_type = "HvqInfo")]
pub fn inspect_hvq(hvq: &[u8]) -> Result<JsValue, JsValue> {
    hvq_codec::inspect(hvq)
        .map(|i| info_to_js(&i))
        .map_err(codec_error)
}

/// Whether the bytes start with the `.hvq` magic.
#[wasm_bindgen(js_name = isHvq)]
pub fn is_hvq(bytes: &[u8]) -> bool {
    hvq_codec::is_hvq(bytes)
}

/// An hvq model ready to encode images to `.hvq` files and tokens, and to decode them back.
///
/// Holds the weights on the chosen backend (GPU buffers on WebGPU): call `free()` when done to
/// release them at once instead of waiting for garbage collection. Calls still running when
/// `free()` is called finish first.
#[wasm_bindgen(js_name = HvqCodec)]
pub struct HvqCodec {
    codec: Rc<Codec>,
}

#[wasm_bindgen(js_class = HvqCodec)]
impl HvqCodec {
    /// Loads a safetensors weight file and instantiates the model on `backend`:
    /// `"auto"` (default: WebGPU when an adapter exists, else the CPU), `"webgpu"` (fail without one)
    /// or `"cpu"`, with WebGPU kernels in `precision` (`"f32"`, the default, or `"f16"`, which
    /// needs the adapter's `shader-f16` and is refused with the CPU backend). `rdLambda` (default 0)
    /// makes its encodes choose tokens by rate and distortion (smaller files, slightly lower quality;
    /// the native `hvq encode --rd-lambda`); a negative or non-finite value is refused (`RateWeight`).
    /// Rejects with an `HvqError` naming the problem (bad weights, no adapter, no `shader-f16`, …).
    pub async fn create(
        #[wasm_bindgen(js_name = weightBytes)] weight_bytes: Vec<u8>,
        #[wasm_bindgen(unchecked_param_type = "HvqBackend")] backend: Option<String>,
        #[wasm_bindgen(unchecked_param_type = "HvqPrecision")] precision: Option<String>,
        #[wasm_bindgen(js_name = rdLambda)] rd_lambda: Option<f64>,
    ) -> Result<HvqCodec, JsValue> {
        let backend = match backend.as_deref().unwrap_or("auto") {
            "webgpu" => Backend::Wgpu,
            other => other
                .parse::<Backend>()
                .map_err(|e| js_error(&e, "UnknownBackend"))?,
        };
        let f16 = match precision.as_deref().unwrap_or("f32") {
            "f32" => false,
            "f16" if backend == Backend::Cpu => {
                return Err(argument_error(
                    "precision \"f16\" runs on WebGPU only; the CPU backend is always f32".into(),
                ));
            }
            "f16" => true,
            other => {
                return Err(argument_error(format!(
                    "unknown precision {other:?} (expected \"f32\" or \"f16\")"
                )));
            }
        };
        let codec = Codec::from_weight_bytes(&weight_bytes)
            .map_err(codec_error)?
            .backend(backend)
            .gpu_f16(f16)
            .rate_distortion(rd_lambda.unwrap_or(0.0))
            .build_async()
            .await
            .map_err(codec_error)?;
        Ok(HvqCodec {
            codec: Rc::new(codec),
        })
    }

    /// The backend the model runs on: `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter = backendName)]
    pub fn backend_name(&self) -> String {
        match self.codec.backend() {
            BackendKind::Wgpu => "webgpu".into(),
            other => other.to_string(),
        }
    }

    /// What the kernels' activations are: `"f16"` or `"f32"` (always on the CPU backend).
    #[wasm_bindgen(getter)]
    pub fn precision(&self) -> String {
        if self.codec.runs_f16() { "f16" } else { "f32" }.into()
    }

    /// The rate–distortion weight its encodes use (0: the quantizer's own tokens).
    #[wasm_bindgen(getter = rdLambda)]
    pub fn rd_lambda(&self) -> f64 {
        self.codec.rd_lambda()
    }

    /// The model fingerprint (hex) that `.hvq` files made by this model carry.
    #[wasm_bindgen(getter)]
    pub fn fingerprint(&self) -> String {
        hvq_spec::fingerprint_hex(&self.codec.fingerprint())
    }

    /// Number of token levels (level 0 is the finest).
    #[wasm_bindgen(getter)]
    pub fn levels(&self) -> u32 {
        self.codec.config().levels as u32
    }

    /// Number of codebook entries (tokens are in `0..codebookSize`).
    #[wasm_bindgen(getter = codebookSize)]
    pub fn codebook_size(&self) -> u32 {
        self.codec.config().codebook_size as u32
    }

    /// The model configuration as JSON (the weight file's `hvq.config`).
    #[wasm_bindgen(getter = configJson)]
    pub fn config_json(&self) -> String {
        self.codec.config().to_json()
    }

    /// `[width, height]` of level `level`'s token grid for an image of `width × height`.
    #[wasm_bindgen(js_name = gridSize)]
    pub fn grid_size(&self, level: u32, width: u32, height: u32) -> Result<Vec<u32>, JsValue> {
        if level as usize >= self.codec.config().levels {
            return Err(codec_error(CodecError::LevelOutOfRange {
                level: level as usize,
                available: (0..self.codec.config().levels).collect(),
            }));
        }
        let (w, h) = self.codec.grid_size(level as usize, width, height);
        Ok(vec![w as u32, h as u32])
    }

    /// How many tiles an image of `width × height` runs in (1 when it runs whole): the `total` that
    /// `onProgress` callbacks report.
    #[wasm_bindgen(js_name = tilesFor)]
    pub fn tiles_for(&self, width: u32, height: u32) -> u32 {
        self.codec.tiles_for(width, height) as u32
    }

    /// Encodes an image (`ImageData` or `{data, width, height}` RGBA8; alpha is ignored) to a `.hvq`
    /// file holding `levels` (default: all). `onProgress(done, total)` is called after every tile
    /// (an image larger than about 0.4 megapixels runs in tiles, so memory stays bounded).
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn encode(
        &self,
        #[wasm_bindgen(unchecked_param_type = "HvqImageInput")] image: JsValue,
        levels: Option<Vec<u32>>,
        #[wasm_bindgen(
            js_name = onProgress,
            unchecked_param_type = "((done: number, total: number) => void) | undefined"
        )]
        on_progress: Option<js_sys::Function>,
    ) -> Result<js_sys::Promise, JsValue> {
        let image = image_arg(&image)?;
        Ok(self.encode_hvq(image, levels_arg(levels), on_progress))
    }

    /// Encodes RGBA8 pixels (`width * height * 4` bytes, row-major) to a `.hvq` file holding `levels`.
    #[wasm_bindgen(js_name = encodeRgba, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn encode_rgba(
        &self,
        rgba: &[u8],
        width: u32,
        height: u32,
        levels: Option<Vec<u32>>,
        #[wasm_bindgen(
            js_name = onProgress,
            unchecked_param_type = "((done: number, total: number) => void) | undefined"
        )]
        on_progress: Option<js_sys::Function>,
    ) -> Result<js_sys::Promise, JsValue> {
        let image = RgbImage::from_rgba8(width, height, rgba).map_err(codec_error)?;
        Ok(self.encode_hvq(image, levels_arg(levels), on_progress))
    }

    /// Encodes an image file's bytes (PNG, JPEG, WebP, BMP, GIF, TIFF; read by the codec itself, so the
    /// pixels are exactly those the native `hvq` tool reads) to a `.hvq` file holding `levels`.
    #[wasm_bindgen(js_name = encodeImageFile, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn encode_image_file(
        &self,
        bytes: &[u8],
        levels: Option<Vec<u32>>,
        #[wasm_bindgen(
            js_name = onProgress,
            unchecked_param_type = "((done: number, total: number) => void) | undefined"
        )]
        on_progress: Option<js_sys::Function>,
    ) -> Result<js_sys::Promise, JsValue> {
        let image = RgbImage::decode(bytes, self.codec.limits()).map_err(codec_error)?;
        Ok(self.encode_hvq(image, levels_arg(levels), on_progress))
    }

    fn encode_hvq(
        &self,
        image: RgbImage,
        levels: LevelSelection,
        on_progress: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let codec = Rc::clone(&self.codec);
        future_to_promise(async move {
            let hvq = codec
                .encode_to_hvq_with_progress_async(&image, levels, reporter(on_progress))
                .await
                .map_err(codec_error)?;
            Ok(Uint8Array::from(hvq.as_slice()).into())
        })
    }

    /// Encodes an image to its token grids (one per level in `levels`, default all; finest first),
    /// for tokenizer use or for drawing.
    #[wasm_bindgen(js_name = encodeTokens, unchecked_return_type = "Promise<HvqTokenGrid[]>")]
    pub fn encode_tokens(
        &self,
        #[wasm_bindgen(unchecked_param_type = "HvqImageInput")] image: JsValue,
        levels: Option<Vec<u32>>,
        #[wasm_bindgen(
            js_name = onProgress,
            unchecked_param_type = "((done: number, total: number) => void) | undefined"
        )]
        on_progress: Option<js_sys::Function>,
    ) -> Result<js_sys::Promise, JsValue> {
        let image = image_arg(&image)?;
        let levels = levels_arg(levels);
        let codec = Rc::clone(&self.codec);
        Ok(future_to_promise(async move {
            let tokens = codec
                .encode_with_progress_async(&image, levels, reporter(on_progress))
                .await
                .map_err(codec_error)?;
            Ok(grids_to_js(&tokens))
        }))
    }

    /// Decodes a `.hvq` file, or any prefix of one, at `level` (default: the finest complete level).
    /// Rejects for a file made by another model (`kind` `FingerprintMismatch`), a damaged file
    /// (`Format.*`), or a prefix with no complete level (`NoCompleteLevel`). `onProgress(done,
    /// total)` is called after every tile.
    #[wasm_bindgen(unchecked_return_type = "Promise<HvqDecodedImage>")]
    pub fn decode(
        &self,
        hvq: Vec<u8>,
        level: Option<u32>,
        #[wasm_bindgen(
            js_name = onProgress,
            unchecked_param_type = "((done: number, total: number) => void) | undefined"
        )]
        on_progress: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let codec = Rc::clone(&self.codec);
        future_to_promise(async move {
            let DecodedImage {
                image,
                level,
                truncated,
            } = codec
                .decode_hvq_with_progress_async(
                    &hvq,
                    level.map(|l| l as usize),
                    reporter(on_progress),
                )
                .await
                .map_err(codec_error)?;
            Ok(image_to_js(&image, level, truncated))
        })
    }

    /// Decodes one token grid (as returned by `encodeTokens` or `readTokens`) to an image of
    /// `width × height` (the original image size).
    #[wasm_bindgen(js_name = decodeTokens, unchecked_return_type = "Promise<HvqDecodedImage>")]
    pub fn decode_tokens(
        &self,
        #[wasm_bindgen(unchecked_param_type = "HvqTokenGrid")] grid: JsValue,
        width: u32,
        height: u32,
        #[wasm_bindgen(
            js_name = onProgress,
            unchecked_param_type = "((done: number, total: number) => void) | undefined"
        )]
        on_progress: Option<js_sys::Function>,
    ) -> Result<js_sys::Promise, JsValue> {
        let get = |k: &str| Reflect::get(&grid, &k.into()).unwrap_or(JsValue::UNDEFINED);
        let tokens = get("tokens");
        if !tokens.is_instance_of::<Uint32Array>() && !Array::is_array(&tokens) {
            return Err(argument_error(
                "grid.tokens must be a Uint32Array or an array of numbers".into(),
            ));
        }
        let grid = TokenGrid {
            level: u32_arg(&get("level"), "grid.level")? as usize,
            width: u32_arg(&get("width"), "grid.width")? as usize,
            height: u32_arg(&get("height"), "grid.height")? as usize,
            tokens: Uint32Array::new(&tokens).to_vec(),
        };
        let codec = Rc::clone(&self.codec);
        Ok(future_to_promise(async move {
            let image = codec
                .decode_with_progress_async(&grid, width, height, reporter(on_progress))
                .await
                .map_err(codec_error)?;
            Ok(image_to_js(&image, grid.level, false))
        }))
    }

    /// Reads the token grids of a `.hvq` file (or prefix) made by this model, finest first, without
    /// running the model.
    #[wasm_bindgen(js_name = readTokens, unchecked_return_type = "HvqTokenGrid[]")]
    pub fn read_tokens(&self, hvq: &[u8]) -> Result<JsValue, JsValue> {
        let (tokens, _truncated) = self.codec.read_hvq(hvq).map_err(codec_error)?;
        Ok(grids_to_js(&tokens))
    }

    /// Describes a `.hvq` file after checking it fully against this model (fingerprint, checksums,
    /// every chunk's tokens).
    #[wasm_bindgen(unchecked_return_type = "HvqInfo")]
    pub fn info(&self, hvq: &[u8]) -> Result<JsValue, JsValue> {
        self.codec
            .info(hvq)
            .map(|i| info_to_js(&i))
            .map_err(codec_error)
    }
}
