// End-to-end test of the demo page in real headless Chromium (WebGPU on SwiftShader).
//
// Run through `bash scripts/web-test.sh`, which builds web/pkg, puts a model at web/model.safetensors
// and writes native references (the `hvq` CLI, CPU backend, same weights and images) into
// $HVQ_WEB_TEST_DIR. Here the page is driven like a user would: files go through the file input.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';
import { decodePng, psnr } from './tools/png.mjs';

const DIR = process.env.HVQ_WEB_TEST_DIR;
if (!DIR || !existsSync(join(DIR, 'sample.tokens.json'))) {
  throw new Error('HVQ_WEB_TEST_DIR must hold the native references: run `bash scripts/web-test.sh`');
}
const WEB = new URL('.', import.meta.url).pathname;
const MODEL = process.env.HVQ_WEB_TEST_MODEL ?? 'test-model.safetensors';

// Tokens: the browser runs the same WGSL kernels on SwiftShader that the native wgpu backend runs,
// and the native reference here is the CPU backend. Float sums in another order can move a latent
// by a few ulps, which flips a token only where two codebook entries are (nearly) equidistant, so
// 100% is not guaranteed; 99% of an image's tokens still catches any real bug (a wrong kernel
// changes most tokens). Per level the floor is lower: the coarsest grid of a small test image has
// only 64 tokens, where one flip is already 1.6%.
const MIN_AGREEMENT = 0.99;
const MIN_LEVEL_AGREEMENT = 0.95;
// PSNR per level against the original: with the same tokens the decoders differ by float rounding
// only (≤ 1 grey level on a few pixels, ~0.01 dB); a flipped token (≤ 1%) changes one patch of the
// image. 0.1 dB allows both and still fails for a wrong decoder.
const PSNR_TOLERANCE_DB = 0.1;
// Browser reconstruction against the native one, when all tokens agree: equal up to rounding.
const MIN_PSNR_VS_NATIVE_DB = 40;

const BASE_FLAGS = [
  '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
const report = [];
const userDirs = [];
let server, url;

async function launch({ webgpu }) {
  const dir = mkdtempSync(join(tmpdir(), 'hvq-chromium-'));
  userDirs.push(dir);
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [...BASE_FLAGS, ...(webgpu ? ['--enable-unsafe-webgpu'] : [])],
    viewport: { width: 1280, height: 900 },
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.consoleLog = [];
  page.on('console', (m) => page.consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLog.push(`pageerror: ${e.message}`));
  return { ctx, page };
}

async function openPage(page, backend = 'auto', extra = '') {
  await page.goto(`${url}?model=${encodeURIComponent(MODEL)}&backend=${backend}${extra}`);
  await page.waitForFunction(() => ['ready', 'error'].includes(window.hvqDemo?.state), null, { timeout: 240_000 });
  const state = await page.evaluate(() => ({ s: window.hvqDemo.state, status: document.querySelector('#status').textContent }));
  assert.equal(state.s, 'ready', `model did not load: ${state.status}\n${page.consoleLog.join('\n')}`);
  return page.evaluate(() => window.hvqDemo.model);
}

/** Gives `path` to the page's file input and waits until the page has finished with it. */
async function openFile(page, path) {
  const before = await page.evaluate(() => window.hvqDemo.actions);
  await page.setInputFiles('#file', path);
  await page.waitForFunction((n) => window.hvqDemo.actions > n && window.hvqDemo.busy === 0, before, { timeout: 300_000 });
  return page.evaluate(() => ({
    state: window.hvqDemo.state,
    message: window.hvqDemo.message,
    result: window.hvqDemo.result,
    messageVisible: !document.querySelector('#message').hidden,
  }));
}

/** The page's reconstruction of `level` in the last result, as 8-bit RGB. */
async function pagePixels(page, level) {
  const rgba = await page.evaluate((l) => Array.from(window.hvqDemo.pixels[l]), level);
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4) {
    rgb[j++] = rgba[i];
    rgb[j++] = rgba[i + 1];
    rgb[j++] = rgba[i + 2];
  }
  return rgb;
}

const pageHvq = (page) => page.evaluate(() => Array.from(window.hvqDemo.hvq));

/** Checks one encoded image against the native references; returns the figures for the report. */
async function checkAgainstNative(page, name, res, label) {
  assert.equal(res.state, 'ready', `page not ready after ${name}: ${JSON.stringify(res.message)}`);
  assert.equal(res.message, null, `unexpected message: ${JSON.stringify(res.message)}`);
  const native = JSON.parse(readFileSync(join(DIR, `${name}.tokens.json`), 'utf8'));
  const original = decodePng(readFileSync(join(DIR, `${name}.png`)));
  const out = { case: label, levels: [], agreement: NaN, tokens: 0, encodeMs: NaN };
  report.push(out); // before the assertions, so a failure still prints the figures
  let same = 0, total = 0;
  for (const nl of native.levels) {
    const pl = res.result.tokens.find((g) => g.level === nl.level);
    assert.ok(pl, `level ${nl.level} missing in the page's tokens`);
    const nt = nl.tokens.flat();
    assert.deepEqual([pl.width, pl.height], [nl.width, nl.height], `level ${nl.level} grid size`);
    let eq = 0;
    for (let i = 0; i < nt.length; i++) if (nt[i] === pl.tokens[i]) eq++;
    same += eq;
    total += nt.length;

    const decoded = res.result.levels.find((l) => l.level === nl.level);
    assert.ok(decoded, `level ${nl.level} was not decoded in the page`);
    const nativeRec = decodePng(readFileSync(join(DIR, `${name}.level${nl.level}.png`)));
    const nativePsnr = psnr(original.rgb, nativeRec.rgb);
    const mine = await pagePixels(page, nl.level);
    const vsNative = psnr(nativeRec.rgb, mine);
    out.levels.push({
      level: nl.level, grid: `${nl.width}×${nl.height}`, agreement: eq / nt.length,
      psnrPage: decoded.psnr, psnrNative: nativePsnr, psnrDiff: Math.abs(decoded.psnr - nativePsnr),
      pageVsNativeDb: vsNative, bytes: decoded.fileBytes, bpp: decoded.bpp, decodeMs: decoded.decodeMs,
    });
    assert.ok(eq / nt.length >= MIN_LEVEL_AGREEMENT, `level ${nl.level}: token agreement ${(eq / nt.length * 100).toFixed(2)}% < 95%`);
    assert.ok(Math.abs(decoded.psnr - nativePsnr) <= PSNR_TOLERANCE_DB,
      `level ${nl.level}: PSNR ${decoded.psnr.toFixed(3)} dB in the page vs ${nativePsnr.toFixed(3)} dB native`);
    if (eq === nt.length) {
      assert.ok(vsNative >= MIN_PSNR_VS_NATIVE_DB, `level ${nl.level}: page vs native reconstruction ${vsNative.toFixed(1)} dB`);
    }
  }
  assert.equal(res.result.levels.length, native.levels.length, 'every level decodes');
  out.agreement = same / total;
  assert.ok(out.agreement >= MIN_AGREEMENT, `token agreement ${(out.agreement * 100).toFixed(2)}% < 99%`);
  out.tokens = total;
  out.encodeMs = res.result.encodeMs;
  // Same tokens ⇒ the deterministic entropy coder must give the same file, byte for byte.
  const nativeHvq = readFileSync(join(DIR, `${name}.hvq`));
  const mineHvq = Buffer.from(await pageHvq(page));
  out.hvqIdentical = mineHvq.equals(nativeHvq);
  if (same === total) assert.ok(out.hvqIdentical, 'equal tokens but the .hvq bytes differ from the native file');
  return out;
}

before(async () => {
  ({ server, url } = await startServer({ port: 0, root: WEB, quiet: true }));
});

after(async () => {
  server?.close();
  for (const d of userDirs) rmSync(d, { recursive: true, force: true });
  console.log('\n=== hvq browser e2e report ===');
  for (const r of report) {
    if (!r.levels) {
      console.log(r.line);
      continue;
    }
    console.log(`${r.case}: token agreement ${(r.agreement * 100).toFixed(3)}% of ${r.tokens} tokens,` +
      ` .hvq ${r.hvqIdentical ? 'byte-identical to' : 'DIFFERENT from'} native, encode ${r.encodeMs.toFixed(0)} ms`);
    for (const l of r.levels) {
      console.log(`  level ${l.level} (${l.grid}): agreement ${(l.agreement * 100).toFixed(2)}%, PSNR page ${l.psnrPage.toFixed(3)} dB` +
        ` / native ${l.psnrNative.toFixed(3)} dB (|Δ| ${l.psnrDiff.toFixed(4)}), page vs native ${l.pageVsNativeDb.toFixed(1)} dB,` +
        ` ${l.bytes} B = ${l.bpp.toFixed(4)} bpp, decode ${l.decodeMs.toFixed(0)} ms`);
    }
  }
});

describe('demo page on WebGPU (SwiftShader)', () => {
  let browser, page, model;
  before(async () => {
    browser = await launch({ webgpu: true });
    page = browser.page;
  });
  after(async () => browser?.ctx.close());

  test('loads the model on WebGPU', { timeout: 300_000 }, async () => {
    // "auto" would pick the CPU backend on this software adapter (tested below): pin WebGPU.
    model = await openPage(page, 'webgpu');
    assert.equal(model.backendName, 'webgpu', `backend ${model.backendName}: ${page.consoleLog.join('\n')}`);
    assert.ok(model.webgpu.available);
    const features = await page.evaluate(() => document.querySelector('#gpu-features').textContent);
    assert.match(features, /portable WGSL in f32.*this adapter offers: /, features);
    report.push({ line: `page: ${features}` });
    report.push({ line: `model: ${model.levels} levels, ${model.modelBytes} B, on ${model.backendName} (${model.webgpu.adapter}),` +
      ` created in ${model.createMs.toFixed(0)} ms, fingerprint ${model.fingerprint.slice(0, 16)}…` });
  });

  test('generated image: tokens equal native, every level decodes, PSNR matches', { timeout: 300_000 }, async () => {
    const res = await openFile(page, join(DIR, 'sample.png'));
    await checkAgainstNative(page, 'sample', res, `generated sample (${decodePng(readFileSync(join(DIR, 'sample.png'))).width}² px), WebGPU`);
  });

  const kodak = existsSync(join(DIR, 'kodim23.png'));
  if (!kodak) console.warn('\n*** Kodak images not found: the real-photo case is SKIPPED (set HVQ_KODAK_DIR) ***\n');
  test('real photo (Kodak kodim23 shrunk to 96×64): tokens equal native, PSNR matches', {
    timeout: 300_000, skip: kodak ? false : 'Kodak images not found (../shared/data/kodak); real-photo case skipped',
  }, async () => {
    const res = await openFile(page, join(DIR, 'kodim23.png'));
    await checkAgainstNative(page, 'kodim23', res, 'Kodak kodim23 (96×64), WebGPU');
  });

  test('progressive view: growing prefixes decode coarse to fine', { timeout: 300_000 }, async () => {
    const info = await page.evaluate(() => window.hvqDemo.result.info);
    const setPrefix = async (n) => {
      await page.evaluate((v) => {
        const r = document.querySelector('#prog-range');
        r.value = String(v);
        r.dispatchEvent(new Event('input'));
      }, n);
      await page.waitForFunction((v) => document.querySelector('#prog-label').textContent.startsWith(`${v} of`), n, { timeout: 120_000 });
      return page.evaluate(() => document.querySelector('#prog-canvas').dataset.level);
    };
    assert.equal(await setPrefix(info.headerBytes + 1), '', 'a prefix inside the first chunk has no level yet');
    let end = info.headerBytes;
    for (const [i, chunk] of info.levels.entries()) {
      end += chunk.bytes;
      assert.equal(await setPrefix(end), String(chunk.level), `prefix of ${end} bytes`);
      const next = info.levels[i + 1];
      if (next) assert.equal(await setPrefix(end + Math.floor(next.bytes / 2)), String(chunk.level), 'mid-chunk prefix');
    }
    assert.deepEqual(info.levels.map((l) => l.level), [...info.levels.map((l) => l.level)].sort((a, b) => b - a), 'coarsest first');
    mkdirSync(join(WEB, 'screenshots'), { recursive: true });
    await page.screenshot({ path: join(WEB, 'screenshots', 'e2e.png'), fullPage: true });
  });

  test('bad input shows a clear message and the page stays usable', { timeout: 300_000 }, async () => {
    const bad = (name, bytes) => {
      const p = join(DIR, name);
      writeFileSync(p, bytes);
      return p;
    };
    const good = readFileSync(join(DIR, 'sample.hvq'));
    const cases = [
      ['not-an-image.png', Buffer.from('this is a text file, not a PNG\n'), /not an image/i],
      ['notes.txt', Buffer.from('hello'), /not an image/i],
      ['corrupt.hvq', (() => {
        const b = Buffer.from(good);
        for (let i = 80; i < 84; i++) b[i] ^= 0x5a; // inside the first chunk (the header is 68 bytes)
        return b;
      })(), /checksum|corrupt|damaged|invalid/i],
      ['header-cut.hvq', good.subarray(0, 40), /more data|truncated|header|too short|ends/i],
      ['other-model.hvq', readFileSync(join(DIR, 'other-model.hvq')), /another model|other model|encoded with model/i],
    ];
    for (const [name, bytes, expect] of cases) {
      const res = await openFile(page, bad(name, bytes));
      assert.ok(res.messageVisible && res.message?.kind === 'error', `${name}: no error message shown`);
      assert.match(res.message.text, expect, `${name}: unclear message`);
      assert.equal(res.state, 'ready', `${name}: page not usable afterwards`);
      report.push({ line: `bad input ${name}: "${res.message.text}"` });
    }
    // Still usable: open the native .hvq file (tokens read in the page must be the native ones).
    const res = await openFile(page, join(DIR, 'sample.hvq'));
    assert.equal(res.message, null);
    const native = JSON.parse(readFileSync(join(DIR, 'sample.tokens.json'), 'utf8'));
    for (const nl of native.levels) {
      assert.deepEqual(res.result.tokens.find((g) => g.level === nl.level).tokens, nl.tokens.flat(), `.hvq level ${nl.level}`);
    }
    assert.equal(res.result.levels.length, native.levels.length);
  });

  test('"File size" (rate-distortion λ) reaches the codec: the native --rd-lambda file; a bad λ is refused clearly', { timeout: 300_000 }, async () => {
    // The CPU backend in wasm runs the native code path, so the file must match byte for byte.
    const m = await openPage(page, 'cpu', '&rd=0.3');
    assert.equal(m.rdLambda, 0.3);
    assert.match(await page.evaluate(() => document.querySelector('#status').textContent), /rate and distortion, λ 0\.3/);
    const res = await openFile(page, join(DIR, 'sample.png'));
    assert.equal(res.message, null, JSON.stringify(res.message));
    const mine = Buffer.from(await pageHvq(page));
    assert.ok(mine.equals(readFileSync(join(DIR, 'sample-rd.hvq'))), 'the page file differs from hvq encode --rd-lambda 0.3');
    // A weight the codec refuses: the page says why instead of loading.
    await page.goto(`${url}?model=${encodeURIComponent(MODEL)}&backend=cpu&rd=-1`);
    await page.waitForFunction(() => ['ready', 'error'].includes(window.hvqDemo?.state), null, { timeout: 240_000 });
    const bad = await page.evaluate(() => ({ s: window.hvqDemo.state, status: document.querySelector('#status').textContent }));
    assert.equal(bad.s, 'error', JSON.stringify(bad));
    assert.match(bad.status, /rate-distortion weight must be finite and at least 0/, bad.status);
    report.push({ line: `rd=0.3: ${mine.length} B, the native file; rd=-1: "${bad.status}"` });
  });

  test('f16 asked for: f16 kernels where the adapter has shader-f16, else f32 and the page says why', { timeout: 300_000 }, async () => {
    const m = await openPage(page, 'webgpu', '&precision=f16');
    const features = await page.evaluate(() => document.querySelector('#gpu-features').textContent);
    if (m.f16Offered) {
      assert.equal(m.precision, 'f16');
      assert.match(features, /f16 activations \(shader-f16\)/, features);
    } else {
      // SwiftShader offers no shader-f16.
      assert.equal(m.precision, 'f32');
      assert.match(features, /portable WGSL in f32.*f16 was asked for but this adapter has no shader-f16/, features);
    }
    report.push({ line: `precision=f16 asked: runs ${m.precision}; page: ${features}` });
  });

  test('"auto" skips the software WebGPU adapter and says why', { timeout: 300_000 }, async () => {
    const auto = await openPage(page, 'auto');
    assert.ok(auto.webgpu.available && auto.webgpu.fallback, `SwiftShader should be a fallback adapter: ${JSON.stringify(auto.webgpu)}`);
    assert.equal(auto.backendName, 'cpu');
    const note = await page.evaluate(() => ({ hidden: document.querySelector('#gpu-note').hidden, text: document.querySelector('#gpu-note').textContent }));
    assert.ok(!note.hidden && /software adapter/i.test(note.text), `no clear message: ${JSON.stringify(note)}`);
    report.push({ line: `auto on SwiftShader: runs on ${auto.backendName}; note: "${note.text}"` });
  });

  test('"After encoding, decode" decodes each level at most once, and only what it asks for', { timeout: 300_000 }, async () => {
    const n = JSON.parse(readFileSync(join(DIR, 'sample.tokens.json'), 'utf8')).levels.length;
    let first = null; // the file from "every level": what is decoded must not change what is encoded
    for (const [show, decodes] of [['all', n], ['best', 1], ['none', 0]]) {
      await page.selectOption('#show-levels', show);
      const before = await page.evaluate(() => window.hvqDemo.calls.decode ?? 0);
      const res = await openFile(page, join(DIR, 'sample.png'));
      assert.equal(res.message, null, `${show}: ${JSON.stringify(res.message)}`);
      const made = (await page.evaluate(() => window.hvqDemo.calls.decode ?? 0)) - before;
      assert.equal(made, decodes, `"${show}": ${made} decodes for ${n} levels`);
      assert.equal(res.result.levels.length, decodes, `"${show}": levels shown`);
      assert.equal(res.result.skippedLevels.length, n - decodes);
      assert.equal(res.result.tokens.length, n, `"${show}": every level's tokens`);
      const hvq = Buffer.from(await pageHvq(page));
      first ??= hvq;
      assert.ok(hvq.equals(first), `"${show}": the .hvq differs from the one made with "all"`);
      report.push({ line: `"After encoding, decode: ${show}": ${made} decode calls for ${n} levels` });
    }
    await page.selectOption('#show-levels', 'all');
  });

  test('no uncaught errors in the page', () => {
    const errors = page.consoleLog.filter((l) => l.startsWith('pageerror') || /panicked/.test(l));
    assert.deepEqual(errors, []);
  });
});

describe('demo page without WebGPU', () => {
  test('says so clearly and falls back to the CPU backend, with the same tokens', { timeout: 400_000 }, async (t) => {
    const { ctx, page } = await launch({ webgpu: false });
    try {
      const model = await openPage(page);
      if (model.webgpu.available) {
        t.skip('this Chromium offers WebGPU even without --enable-unsafe-webgpu');
        return;
      }
      assert.equal(model.backendName, 'cpu');
      const note = await page.evaluate(() => ({ hidden: document.querySelector('#gpu-note').hidden, text: document.querySelector('#gpu-note').textContent }));
      assert.ok(!note.hidden && /no webgpu/i.test(note.text), `no clear message: ${JSON.stringify(note)}`);
      report.push({ line: `no-WebGPU message: "${note.text}"` });
      const res = await openFile(page, join(DIR, 'sample.png'));
      await checkAgainstNative(page, 'sample', res, 'generated sample, CPU backend in wasm');
    } finally {
      await ctx.close();
    }
  });
});
