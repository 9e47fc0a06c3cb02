// Times encode and decode of one image in this browser; `web/bench.mjs` drives it headless.
import init, { HvqCodec } from './pkg/hvq_wasm.js';

const q = new URLSearchParams(location.search);
const backend = q.get('backend') ?? 'webgpu';
const reps = Number(q.get('reps') ?? 5);
const imageUrl = q.get('image') ?? 'sample.png';
const out = document.querySelector('#out');

// null when nothing was timed (reps=0: first calls only, for models that take minutes here).
const median = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);

async function time(fn) {
  const t0 = performance.now();
  const r = await fn();
  return [performance.now() - t0, r];
}

async function run() {
  await init();
  const weights = new Uint8Array(await (await fetch(q.get('model') ?? 'model.safetensors')).arrayBuffer());
  const [createMs, codec] = await time(() => HvqCodec.create(weights, backend));
  const bitmap = await createImageBitmap(await (await fetch(imageUrl)).blob(),
    { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  const image = ctx.getImageData(0, 0, bitmap.width, bitmap.height);

  // The first call compiles pipelines and allocates buffers: timed apart, not in the medians.
  const [firstEncodeMs, hvq] = await time(() => codec.encode(image));
  const levels = codec.info(hvq).levels.map((l) => l.level);
  const firstDecodeMs = {};
  for (const l of levels) firstDecodeMs[l] = (await time(() => codec.decode(hvq, l)))[0];

  const enc = [];
  const dec = Object.fromEntries(levels.map((l) => [l, []]));
  for (let i = 0; i < reps; i++) {
    enc.push((await time(() => codec.encode(image)))[0]);
    for (const l of levels) dec[l].push((await time(() => codec.decode(hvq, l)))[0]);
  }
  const result = {
    backend: codec.backendName, width: image.width, height: image.height, reps, createMs,
    firstEncodeMs, firstDecodeMs, encodeMs: median(enc),
    decodeMs: Object.fromEntries(levels.map((l) => [l, median(dec[l])])),
    userAgent: navigator.userAgent,
  };
  codec.free();
  return result;
}

run().then(
  (r) => {
    window.benchResult = r;
    out.textContent = JSON.stringify(r, null, 2);
  },
  (e) => {
    window.benchResult = { error: `${e.name}: ${e.message}` };
    out.textContent = `failed: ${e.message}`;
  },
);
