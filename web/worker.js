// The model side of the demo: every codec call runs here, off the main thread.
//
// Protocol: the page posts `{id, op, ...args}`; the worker answers `{id, ok: true, result}` or
// `{id, ok: false, error: {name, message}}`, and may post `{id, progress: {stage, loaded, total}}` first.
// Calls run one at a time in arrival order (the codec is not re-entrant).
import init, { HvqCodec } from './pkg/hvq_wasm.js';

let codec = null;
let queue = Promise.resolve();

const post = (msg, transfer = []) => self.postMessage(msg, transfer);

/** Optional WebGPU features the adapter is asked about: the kernels use `shader-f16` when the page asks
 * for f16 and the adapter has it; the others are only reported. */
const OPTIONAL_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query'];

/** What WebGPU this worker sees: `{available, reason?, adapter?, fallback?, features?}`. */
async function probeWebGpu() {
  if (!('gpu' in navigator) || !navigator.gpu) {
    return { available: false, reason: 'this browser exposes no WebGPU (navigator.gpu is missing)' };
  }
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { available: false, reason: 'WebGPU is present but offers no adapter' };
    const info = adapter.info ?? {};
    const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
    const features = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
    return { available: true, adapter: name, fallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter), features };
  } catch (e) {
    return { available: false, reason: `requesting a WebGPU adapter failed: ${e.message}` };
  }
}

/** Fetches `url` into one Uint8Array, reporting download progress. */
async function fetchBytes(url, id) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`could not load the model from ${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get('content-length')) || 0;
  const reader = res.body.getReader();
  const parts = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.length;
    post({ id, progress: { stage: 'download', loaded, total } });
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return bytes;
}

/** Decodes an image file to RGBA pixels, scaling its longest side down to `maxSide` (0 = keep). */
async function readImage(blob, maxSide) {
  let bitmap;
  try {
    // No colour management and no premultiplication: the codec must see the file's own 8-bit values,
    // exactly as the native CLI reads them.
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    const err = new Error(`"${blob.name ?? 'file'}" is not an image this browser can decode (${e.message || e.name})`);
    err.name = 'ImageError';
    throw err;
  }
  let { width, height } = bitmap;
  const scale = maxSide > 0 ? Math.min(1, maxSide / Math.max(width, height)) : 1;
  if (scale < 1) {
    width = Math.max(1, Math.round(width * scale));
    height = Math.max(1, Math.round(height * scale));
    bitmap.close();
    bitmap = await createImageBitmap(blob, {
      colorSpaceConversion: 'none', premultiplyAlpha: 'none',
      resizeWidth: width, resizeHeight: height, resizeQuality: 'high',
    });
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const data = ctx.getImageData(0, 0, width, height);
  // The codec is RGB: flatten any transparency onto white, as an image viewer shows it.
  const px = data.data;
  for (let i = 0; i < px.length; i += 4) {
    const a = px[i + 3];
    if (a !== 255) {
      for (let k = 0; k < 3; k++) px[i + k] = Math.round((px[i + k] * a + 255 * (255 - a)) / 255);
      px[i + 3] = 255;
    }
  }
  return data;
}

/** A codec progress callback that posts `{stage, loaded: tiles done, total: tiles}` for call `id`. */
const tileProgress = (id, stage) => (done, total) => post({ id, progress: { stage, loaded: done, total } });

function needCodec() {
  if (!codec) throw new Error('the model is not loaded yet');
  return codec;
}

const ops = {
  async init({ modelUrl, backend, precision, rdLambda = 0 }, id) {
    post({ id, progress: { stage: 'wasm' } });
    await init();
    const webgpu = await probeWebGpu();
    const weights = await fetchBytes(modelUrl, id);
    post({ id, progress: { stage: 'compile', loaded: weights.length, total: weights.length } });
    if (codec) {
      codec.free();
      codec = null;
    }
    // As natively: "auto" skips a software WebGPU adapter (SwiftShader runs the WGSL on the CPU,
    // 58–91× slower than the CPU backend in wasm for the default model; docs/bench-web-256.txt).
    const chosen = backend === 'auto' && webgpu.available && webgpu.fallback ? 'cpu' : backend;
    // f16 kernels only where they can run: on WebGPU, with the adapter's shader-f16.
    const f16Offered = webgpu.available && (webgpu.features ?? []).includes('shader-f16');
    const usePrecision = precision === 'f16' && chosen !== 'cpu' && f16Offered ? 'f16' : 'f32';
    const t0 = performance.now();
    codec = await HvqCodec.create(weights, chosen, usePrecision, rdLambda);
    return {
      backendName: codec.backendName,
      precision: codec.precision,
      rdLambda: codec.rdLambda,
      f16Asked: precision === 'f16',
      f16Offered,
      fingerprint: codec.fingerprint,
      levels: codec.levels,
      modelBytes: weights.length,
      createMs: performance.now() - t0,
      webgpu,
    };
  },

  async readImage({ blob, maxSide }) {
    const img = await readImage(blob, maxSide);
    return { width: img.width, height: img.height, rgba: img.data };
  },

  async encode({ width, height, rgba }, id) {
    const c = needCodec();
    const t0 = performance.now();
    // Images above about 0.4 megapixels run in tiles (bounded memory); report each one.
    const hvq = await c.encode(new ImageData(rgba, width, height), undefined, tileProgress(id, 'encode'));
    return { hvq, ms: performance.now() - t0, tiles: c.tilesFor(width, height) };
  },

  async info({ hvq }) {
    return needCodec().info(hvq);
  },

  async tokens({ hvq }) {
    return needCodec().readTokens(hvq);
  },

  async decode({ hvq, level }, id) {
    const c = needCodec();
    const t0 = performance.now();
    const img = await c.decode(hvq, level ?? undefined, tileProgress(id, 'decode'));
    return { width: img.width, height: img.height, rgba: img.rgba, level: img.level, ms: performance.now() - t0 };
  },
};

self.onmessage = (ev) => {
  const { id, op, ...args } = ev.data;
  queue = queue.then(async () => {
    try {
      const fn = ops[op];
      if (!fn) throw new Error(`unknown worker op ${op}`);
      const result = await fn(args, id);
      const transfer = [];
      for (const v of Object.values(result ?? {})) if (ArrayBuffer.isView(v)) transfer.push(v.buffer);
      post({ id, ok: true, result }, transfer);
    } catch (e) {
      post({ id, ok: false, error: { name: e?.name ?? 'Error', message: e?.message ?? String(e) } });
    }
  });
};
