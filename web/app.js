// The demo page: UI only. All codec work happens in worker.js.
//
// `window.hvqDemo` exposes the page's state and last results for the end-to-end test (web/e2e.test.mjs).

const $ = (sel) => document.querySelector(sel);
const MODEL_URL = new URLSearchParams(location.search).get('model') ?? 'model.safetensors';

const demo = {
  state: 'loading',
  model: null,
  result: null,
  message: null,
  busy: 0,
  /** Finished user actions (successful or not); the e2e test waits on this. */
  actions: 0,
  log: [],
  /** RGBA of each level's reconstruction in the last result, by level. */
  pixels: {},
  /** Worker calls made, by operation (the e2e test checks that nothing is decoded twice). */
  calls: {},
};
window.hvqDemo = demo;

// ---------- worker calls ----------

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
let nextId = 1;
const pending = new Map();
worker.onmessage = (ev) => {
  const { id, ok, result, error, progress } = ev.data;
  const p = pending.get(id);
  if (!p) return;
  if (progress) {
    p.onProgress?.(progress);
    return;
  }
  pending.delete(id);
  if (ok) p.resolve(result);
  else {
    const err = new Error(error.message);
    err.name = error.name;
    p.reject(err);
  }
};
worker.onerror = (ev) => {
  setStatus('error', `The worker failed: ${ev.message ?? 'unknown error'}. Reload the page.`);
};

function call(op, args = {}, onProgress, transfer = []) {
  const id = nextId++;
  demo.calls[op] = (demo.calls[op] ?? 0) + 1;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}

// ---------- status, messages, progress ----------

function setStatus(state, text) {
  demo.state = state;
  document.body.dataset.state = state;
  const el = $('#status');
  el.dataset.state = state;
  el.textContent = text;
}

function showMessage(text, kind = 'error') {
  const el = $('#message');
  demo.message = text ? { kind, text } : null;
  if (text) demo.log.push({ kind, text });
  el.hidden = !text;
  el.className = kind;
  el.textContent = text ?? '';
}

function setProgress(fraction) {
  const bar = $('#progress');
  bar.hidden = fraction === null;
  if (fraction === undefined) bar.removeAttribute('value'); // indeterminate
  else if (fraction !== null) bar.value = fraction;
}

/** Progress of an encode or decode in tiles: a bar once there is more than one tile. */
function tileBar(p) {
  demo.tiles = { stage: p.stage, done: p.loaded, total: p.total };
  if (p.total > 1) setProgress(p.loaded / p.total);
}

/** Runs `fn` as one user action: status shows `label`, errors become the page message, the page stays usable. */
async function action(label, fn) {
  demo.busy++;
  const before = demo.model ? 'ready' : demo.state;
  setStatus('busy', label);
  setProgress(undefined);
  try {
    await fn();
    return true;
  } catch (e) {
    showMessage(describeError(e));
    return false;
  } finally {
    demo.busy--;
    demo.actions++;
    setProgress(null);
    if (demo.model) setStatus('ready', readyText());
    else setStatus(before === 'busy' ? 'error' : before, $('#status').textContent);
  }
}

function describeError(e) {
  const msg = e?.message ?? String(e);
  if (e?.name === 'ImageError') return `Not an image: ${msg}.`;
  return msg.charAt(0).toUpperCase() + msg.slice(1);
}

const fmtBytes = (n) => (n < 10240 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`);
const fmtMs = (ms) => (ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`);

function readyText() {
  const m = demo.model;
  const rd = m.rdLambda > 0 ? `; tokens chosen by rate and distortion, λ ${m.rdLambda}` : '';
  return `Model ready: ${m.levels} levels on ${m.backendName} (${fmtBytes(m.modelBytes)} of weights, set up in ${fmtMs(m.createMs)}${rd}).`;
}

// ---------- model loading ----------

async function loadModel(backend, precision = $('#precision').value, rdLambda = Number($('#rd-lambda').value)) {
  setStatus('loading', 'Loading the model…');
  setProgress(undefined);
  $('#model-url').textContent = MODEL_URL;
  try {
    const model = await call('init', { modelUrl: MODEL_URL, backend, precision, rdLambda }, (p) => {
      if (p.stage === 'wasm') setStatus('loading', 'Loading the WebAssembly module…');
      if (p.stage === 'download') {
        setStatus('loading', `Downloading the model… ${fmtBytes(p.loaded)}${p.total ? ` of ${fmtBytes(p.total)}` : ''}`);
        setProgress(p.total ? p.loaded / p.total : undefined);
      }
      if (p.stage === 'compile') {
        setStatus('loading', 'Preparing the model (uploading weights, compiling shaders)…');
        setProgress(undefined);
      }
    });
    demo.model = model;
    $('#fingerprint').textContent = model.fingerprint.slice(0, 16) + '…';
    $('#gpu-features').textContent = featuresText(model);
    const note = $('#gpu-note');
    if (!model.webgpu.available) {
      note.hidden = false;
      note.textContent = `No WebGPU here: ${model.webgpu.reason}. hvq runs on the CPU backend in WebAssembly instead, ` +
        'which is slower. Chrome and Edge 113+ have WebGPU; on Linux it may need chrome://flags/#enable-unsafe-webgpu.';
    } else if (!/webgpu|wgpu|gpu/i.test(model.backendName)) {
      note.hidden = false;
      note.textContent = model.webgpu.fallback
        ? `WebGPU here is a software adapter (${model.webgpu.adapter}), which runs the shaders on the CPU far more ` +
          `slowly than the CPU backend: the model runs on ${model.backendName}. Pick "WebGPU" to use it anyway.`
        : `WebGPU is available (${model.webgpu.adapter}), but the model runs on ${model.backendName}.`;
    } else {
      note.hidden = !model.webgpu.fallback;
      note.textContent = `WebGPU runs on a software adapter (${model.webgpu.adapter}): expect it to be far ` +
        'slower than the CPU backend, which "auto" would have picked.';
    }
    setProgress(null);
    setStatus('ready', readyText());
    return true;
  } catch (e) {
    demo.model = null;
    setProgress(null);
    setStatus('error', `The model could not be loaded: ${describeError(e)}`);
    return false;
  }
}

// ---------- drawing ----------

function drawRgba(canvas, width, height, rgba) {
  canvas.width = width;
  canvas.height = height;
  const data = rgba instanceof Uint8ClampedArray ? rgba : new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length);
  canvas.getContext('2d').putImageData(new ImageData(data, width, height), 0, 0);
}

/** A stable colour per token id (hashed hue, saturation and lightness). */
function tokenColor(id) {
  let h = Math.imul(id + 1, 0x9e3779b1) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  const hue = (h & 0xffff) / 0x10000;
  const sat = 0.5 + 0.4 * (((h >>> 16) & 0xff) / 255);
  const lig = 0.3 + 0.4 * (((h >>> 24) & 0xff) / 255);
  // HSL → RGB
  const q = lig < 0.5 ? lig * (1 + sat) : lig + sat - lig * sat, p = 2 * lig - q;
  const ch = (t) => {
    t = (t + 1) % 1;
    const v = t < 1 / 6 ? p + (q - p) * 6 * t : t < 1 / 2 ? q : t < 2 / 3 ? p + (q - p) * (2 / 3 - t) * 6 : p;
    return Math.round(v * 255);
  };
  return [ch(hue + 1 / 3), ch(hue), ch(hue - 1 / 3)];
}

function drawTokens(canvas, grid) {
  const rgba = new Uint8ClampedArray(grid.width * grid.height * 4);
  for (let i = 0; i < grid.tokens.length; i++) {
    const [r, g, b] = tokenColor(grid.tokens[i]);
    rgba.set([r, g, b, 255], i * 4);
  }
  drawRgba(canvas, grid.width, grid.height, rgba);
}

function psnr(a, b) {
  if (a.length !== b.length) return NaN;
  let se = 0, n = 0;
  for (let i = 0; i < a.length; i += 4) {
    for (let k = 0; k < 3; k++) {
      const d = a[i + k] - b[i + k];
      se += d * d;
    }
    n += 3;
  }
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255 * n) / se);
}

function card(parent, { title, id }) {
  const el = document.createElement('div');
  el.className = 'card';
  if (id) el.id = id;
  el.innerHTML = `<h3></h3><canvas></canvas><table></table>`;
  el.querySelector('h3').textContent = title;
  parent.append(el);
  return el;
}

function fillTable(table, rows) {
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    tr.innerHTML = '<td></td><td></td>';
    tr.children[0].textContent = k;
    tr.children[1].textContent = v;
    return tr;
  }));
}

// ---------- the main flows ----------

/** Shows everything about `hvq`: token grids, each level's reconstruction and stats, the progressive view. */
async function showHvq(hvq, original, encodeMs, sourceName) {
  const info = await call('info', { hvq });
  // What to decode (#show-levels): a 48-megapixel photo takes tens of minutes per level on the wasm
  // CPU backend, so a user may want the tokens and the file alone. A file opened here is always
  // decoded at its best level first: that is where a file for another model or a damaged file is
  // refused, before the page is cleared. That decode is reused below, never repeated.
  const show = $('#show-levels').value;
  const best = original && show === 'none' ? null : await call('decode', { hvq: hvq.slice() }, tileBar);
  const grids = await call('tokens', { hvq: hvq.slice() });

  const { width, height } = info;
  const pixels = width * height;
  const result = {
    source: sourceName, width, height, hvqBytes: hvq.length, encodeMs, info,
    tokens: grids.map((g) => ({ level: g.level, width: g.width, height: g.height, tokens: Array.from(g.tokens) })),
    levels: [],
  };
  demo.result = null;
  demo.pixels = {};
  demo.hvq = hvq;
  $('#download').disabled = false;
  $('#results').hidden = false;
  $('#summary').textContent = `${sourceName}: ${width}×${height}, .hvq ${fmtBytes(hvq.length)}` +
    ` (${((hvq.length * 8) / pixels).toFixed(3)} bpp for all levels)` + (encodeMs ? `, encoded in ${fmtMs(encodeMs)}` : '');

  const levels = $('#levels');
  levels.replaceChildren();
  if (original) {
    const c = card(levels, { title: `original ${width}×${height}`, id: 'card-original' });
    drawRgba(c.querySelector('canvas'), width, height, original);
    fillTable(c.querySelector('table'), [['raw RGB', fmtBytes(pixels * 3)], ['bits per pixel', '24']]);
  }
  const gridsEl = $('#grids');
  gridsEl.replaceChildren();
  for (const g of [...grids].sort((a, b) => b.level - a.level)) {
    const c = card(gridsEl, { title: `level ${g.level}: ${g.width}×${g.height} tokens`, id: `grid-${g.level}` });
    drawTokens(c.querySelector('canvas'), g);
    const distinct = new Set(g.tokens).size;
    fillTable(c.querySelector('table'), [['tokens', String(g.tokens.length)], ['distinct codes', String(distinct)]]);
  }

  // Reconstructions, coarsest (cheapest) first — the order of the file.
  const skipped = [];
  for (const chunk of info.levels) {
    const dec = best?.level === chunk.level ? best
      : show === 'all' ? await call('decode', { hvq: hvq.slice(), level: chunk.level }) : null;
    if (!dec) {
      skipped.push(chunk.level);
      continue;
    }
    const c = card(levels, { title: `level ${chunk.level}: from ${chunk.gridWidth}×${chunk.gridHeight} tokens`, id: `level-${chunk.level}` });
    drawRgba(c.querySelector('canvas'), dec.width, dec.height, dec.rgba);
    const alone = info.headerBytes + chunk.bytes;
    const p = original ? psnr(original, dec.rgba) : NaN;
    fillTable(c.querySelector('table'), [
      ['level chunk', fmtBytes(chunk.bytes)],
      ['file with this level alone', fmtBytes(alone)],
      ['bits per pixel', ((alone * 8) / pixels).toFixed(4)],
      ['PSNR', original ? `${p.toFixed(2)} dB` : 'no original'],
      ['decode time', fmtMs(dec.ms)],
    ]);
    demo.pixels[chunk.level] = dec.rgba;
    result.levels.push({ level: chunk.level, bytes: chunk.bytes, fileBytes: alone, bpp: (alone * 8) / pixels,
      psnr: p, decodeMs: dec.ms, width: dec.width, height: dec.height });
  }
  if (skipped.length) {
    $('#summary').textContent += `; level${skipped.length > 1 ? 's' : ''} ${skipped.join(', ')} not decoded` +
      ' (see “After encoding, decode”)';
  }
  result.skippedLevels = skipped;
  setupProgressive(hvq, info, best);
  demo.result = result;
}

async function encodeBlob(blob, name) {
  showMessage(null);
  await action(`Reading ${name}…`, async () => {
    if (!demo.model) throw new Error('the model is not loaded, so nothing can be encoded');
    const head = new Uint8Array(await blob.slice(0, 8).arrayBuffer());
    if (isHvq(head) || name.endsWith('.hvq')) {
      const hvq = new Uint8Array(await blob.arrayBuffer());
      setStatus('busy', `Decoding ${name}…`);
      try {
        await showHvq(hvq, null, 0, name);
      } catch (e) {
        throw Object.assign(new Error(`cannot open ${name}: ${e.message}`), { name: e.name });
      }
      return;
    }
    const maxSide = Number($('#max-side').value);
    const img = await call('readImage', { blob, maxSide });
    setStatus('busy', `Encoding ${name} (${img.width}×${img.height}) on ${demo.model.backendName}…`);
    const rgba = img.rgba.slice();
    const enc = await call('encode', img, tileBar, [img.rgba.buffer]);
    setStatus('busy', `Decoding every level…`);
    await showHvq(enc.hvq, rgba, enc.ms, name);
  });
}

const MAGIC = [0x89, 0x48, 0x56, 0x51, 0x0d, 0x0a, 0x1a, 0x0a];
const isHvq = (head) => head.length >= 8 && MAGIC.every((b, i) => head[i] === b);

// ---------- progressive view ----------

let prog = null;
/** `best`: the decode of the whole file when the caller has it, so it is drawn, not decoded again. */
function setupProgressive(hvq, info, best) {
  const range = $('#prog-range');
  prog = { hvq, info, busy: false, want: null, known: best ? { len: hvq.length, dec: best } : null };
  range.max = String(hvq.length);
  range.value = String(hvq.length);
  const list = $('#prog-chunks');
  list.replaceChildren();
  const li = (text) => {
    const el = document.createElement('li');
    el.textContent = text;
    list.append(el);
    return el;
  };
  li(`header: bytes 0–${info.headerBytes} (size, model fingerprint)`);
  for (const ch of info.levels) {
    li(`level ${ch.level} (${ch.gridWidth}×${ch.gridHeight}): bytes ${ch.offset}–${ch.offset + ch.bytes}`);
  }
  if (best) {
    showPrefix(hvq.length);
    return;
  }
  // Nothing decoded: no picture of the previous file may stay next to this one's chunks.
  const canvas = $('#prog-canvas');
  canvas.dataset.level = '';
  canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height);
  $('#prog-label').textContent = 'Not decoded yet: move the slider to decode a prefix of the file.';
}

async function showPrefix(n) {
  if (!prog) return;
  prog.want = n;
  if (prog.busy) return;
  prog.busy = true;
  try {
    while (prog.want !== null) {
      const len = prog.want;
      prog.want = null;
      const label = $('#prog-label');
      const complete = prog.info.levels.filter((c) => c.offset + c.bytes <= len);
      [...$('#prog-chunks').children].forEach((el, i) => el.classList.toggle('done',
        i === 0 ? len >= prog.info.headerBytes : prog.info.levels[i - 1].offset + prog.info.levels[i - 1].bytes <= len));
      if (!complete.length) {
        label.textContent = `${len} of ${prog.hvq.length} bytes: no complete level yet — keep loading.`;
        $('#prog-canvas').dataset.level = '';
        const ctx = $('#prog-canvas').getContext('2d');
        ctx.fillStyle = '#ddd';
        ctx.fillRect(0, 0, $('#prog-canvas').width, $('#prog-canvas').height);
        continue;
      }
      try {
        const dec = prog.known?.len === len ? prog.known.dec : await call('decode', { hvq: prog.hvq.slice(0, len) });
        drawRgba($('#prog-canvas'), dec.width, dec.height, dec.rgba);
        const pct = ((100 * len) / prog.hvq.length).toFixed(0);
        label.textContent = `${len} of ${prog.hvq.length} bytes (${pct}%) → level ${dec.level}` +
          ` (${(len * 8 / (dec.width * dec.height)).toFixed(3)} bpp), decoded in ${fmtMs(dec.ms)}.`;
        $('#prog-canvas').dataset.level = String(dec.level);
      } catch (e) {
        label.textContent = `${len} bytes: ${describeError(e)}`;
      }
    }
  } finally {
    prog.busy = false;
  }
}

async function playProgressive() {
  if (!prog) return;
  const steps = [prog.info.headerBytes, ...prog.info.levels.map((c) => c.offset + c.bytes)];
  const points = [];
  for (let i = 0; i < steps.length; i++) {
    if (i > 0) points.push(Math.round((steps[i - 1] + steps[i]) / 2)); // half-way through a chunk
    points.push(steps[i]);
  }
  for (const n of points) {
    $('#prog-range').value = String(n);
    await showPrefix(n);
    await new Promise((r) => setTimeout(r, 400));
  }
}

// ---------- wiring ----------

function wire() {
  const file = $('#file');
  file.addEventListener('change', () => {
    const f = file.files?.[0];
    if (f) encodeBlob(f, f.name);
    file.value = '';
  });
  const drop = $('#drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer.files?.[0];
    if (f) encodeBlob(f, f.name);
  });
  $('#sample').addEventListener('click', async () => {
    const res = await fetch('sample.png');
    encodeBlob(await res.blob(), 'sample.png');
  });
  $('#download').addEventListener('click', () => {
    if (!demo.hvq) return;
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([demo.hvq], { type: 'application/octet-stream' }));
    a.download = (demo.result?.source ?? 'image').replace(/\.[^.]*$/, '') + '.hvq';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  $('#backend').addEventListener('change', () => loadModel($('#backend').value));
  $('#precision').addEventListener('change', () => loadModel($('#backend').value));
  $('#rd-lambda').addEventListener('change', () => loadModel($('#backend').value));
  $('#prog-range').addEventListener('input', () => showPrefix(Number($('#prog-range').value)));
  $('#prog-play').addEventListener('click', playProgressive);
}

wire();
// `?backend=webgpu|cpu|auto` preselects the backend (the end-to-end test pins WebGPU this way).
const wantedBackend = new URLSearchParams(location.search).get('backend');
if (['auto', 'webgpu', 'cpu'].includes(wantedBackend)) $('#backend').value = wantedBackend;
// `?precision=f16|f32` preselects the WebGPU kernels' precision.
const wantedPrecision = new URLSearchParams(location.search).get('precision');
if (['f32', 'f16'].includes(wantedPrecision)) $('#precision').value = wantedPrecision;
// `?rd=λ` preselects the rate–distortion weight; a value the menu lacks is added to it as given, so
// that the codec itself judges it (the end-to-end test passes a bad one this way).
const wantedRd = new URLSearchParams(location.search).get('rd');
if (wantedRd !== null) {
  const menu = $('#rd-lambda');
  if (![...menu.options].some((o) => o.value === wantedRd)) menu.add(new Option(`λ ${wantedRd}`, wantedRd));
  menu.value = wantedRd;
}
if (!('gpu' in navigator)) {
  const note = $('#gpu-note');
  note.hidden = false;
  note.textContent = 'This browser has no WebGPU: hvq will run on the CPU backend (slower).';
}
loadModel($('#backend').value);

/** Which GPU features the model's kernels use here, and which optional ones the adapter offers. */
function featuresText(model) {
  if (!/webgpu|wgpu|gpu/i.test(model.backendName)) return 'kernels: CPU backend (WebAssembly, SIMD128)';
  const offered = model.webgpu.features?.length ? model.webgpu.features.join(', ') : 'none';
  if (model.precision === 'f16') {
    return 'kernels: WGSL with f16 activations (shader-f16), f32 quantizer and accumulators ' +
      `(this adapter offers: ${offered})`;
  }
  const why = model.f16Asked && !model.f16Offered ? '; f16 was asked for but this adapter has no shader-f16' : '';
  return `kernels: portable WGSL in f32, no optional features used${why} ` +
    `(this adapter offers: ${offered})`;
}
