// A large photo through the demo page's code path in headless Chromium: file input, "keep original
// size", encode in tiles (progress events), decode every level. Not a test (minutes on the wasm CPU
// backend); a measurement, compared with the native CLI's tokens for the same photo.
//
//   node web/large-photo.mjs PHOTO NATIVE_TOKENS.json [--backend cpu|webgpu|auto] [--decode all|best|none]
//
// --decode sets the page's "After encoding, decode" (default all); `none` measures the encode alone,
// which for a 48-megapixel photo is half an hour on the wasm CPU backend of a 2-core machine.
//
// NATIVE_TOKENS.json: `hvq --backend cpu tokens PHOTO -o NATIVE_TOKENS.json` with the same model
// (web/model.safetensors). Prints one JSON line: size, tiles, encode time, per-level agreement.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const [photo, nativePath] = process.argv.slice(2);
const flag = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const backend = flag('--backend', 'cpu');
const decode = flag('--decode', 'all');
if (!photo || !nativePath) throw new Error('usage: node web/large-photo.mjs PHOTO NATIVE_TOKENS.json [--backend B]');

const { server, url } = await startServer({ port: 0, quiet: true });
const profile = mkdtempSync(join(tmpdir(), 'hvq-large-'));
// Peak resident memory of the browser, sampled every 2 s: the browser process of this profile plus
// every Chromium child process (`--type=`), summed, so run no other Chromium meanwhile.
let peakRssMb = 0;
const sampler = setInterval(() => {
  const ps = execFileSync('ps', ['-eo', 'rss=,args='], { encoding: 'utf8', maxBuffer: 1 << 24 });
  const kb = ps.split('\n').filter((l) => l.includes('chromium') && (l.includes(profile) || l.includes('--type='))).reduce((a, l) => a + (parseInt(l, 10) || 0), 0);
  peakRssMb = Math.max(peakRssMb, kb / 1024);
}, 2000);
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--no-first-run'],
});
const page = ctx.pages()[0] ?? (await ctx.newPage());
const log = [];
page.on('console', (m) => log.push(m.text()));
await page.goto(`${url}?model=model.safetensors&backend=${backend}`);
await page.waitForFunction(() => ['ready', 'error'].includes(window.hvqDemo?.state), null, { timeout: 240_000 });
await page.selectOption('#max-side', '0');
await page.selectOption('#show-levels', decode);
// Record every tile progress event the page receives.
await page.evaluate(() => {
  window.tileLog = [];
  setInterval(() => {
    const t = window.hvqDemo.tiles;
    const last = window.tileLog[window.tileLog.length - 1];
    if (t && (!last || last.done !== t.done || last.stage !== t.stage)) window.tileLog.push({ ...t, at: performance.now() });
  }, 50);
});
const before = await page.evaluate(() => window.hvqDemo.actions);
const t0 = Date.now();
await page.setInputFiles('#file', photo);
await page.waitForFunction((n) => window.hvqDemo.actions > n && window.hvqDemo.busy === 0, before, { timeout: 3_600_000, polling: 1000 });
const wall = (Date.now() - t0) / 1000;
const res = await page.evaluate(() => ({ state: window.hvqDemo.state, message: window.hvqDemo.message, result: window.hvqDemo.result, tiles: window.tileLog }));
const native = JSON.parse(readFileSync(nativePath, 'utf8'));
const levels = native.levels.map((nl) => {
  const pl = res.result?.tokens?.find((g) => g.level === nl.level);
  const nt = nl.tokens.flat();
  let same = 0;
  if (pl) for (let i = 0; i < nt.length; i++) if (nt[i] === pl.tokens[i]) same++;
  return { level: nl.level, grid: `${nl.width}×${nl.height}`, agreement: pl ? same / nt.length : null };
});
const encodeTiles = res.tiles.filter((t) => t.stage === 'encode');
console.log(JSON.stringify({
  photo, backend, decode, state: res.state, message: res.message, width: res.result?.width, height: res.result?.height,
  tilesTotal: encodeTiles.at(-1)?.total, encodeProgressEvents: encodeTiles.length,
  encodeMs: res.result?.encodeMs, wallSeconds: wall, levels,
  psnr: res.result?.levels?.map((l) => ({ level: l.level, psnr: l.psnr })),
  browserPeakRssMb: Math.round(peakRssMb),
}));
clearInterval(sampler);
await ctx.close();
server.close();
