// A large photo through the demo page's code path in headless Chromium: file input, "keep original
// size", encode in tiles (progress events), decode every level. Not a test (minutes on the wasm CPU
// backend); a measurement, compared with the native CLI's tokens for the same photo.
//
//   node web/large-photo.mjs PHOTO NATIVE_TOKENS.json [--backend cpu|webgpu|auto]
//
// NATIVE_TOKENS.json: `hvq --backend cpu tokens PHOTO -o NATIVE_TOKENS.json` with the same model
// (web/model.safetensors). Prints one JSON line: size, tiles, encode time, per-level agreement.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const [photo, nativePath] = process.argv.slice(2);
const backend = process.argv.includes('--backend') ? process.argv[process.argv.indexOf('--backend') + 1] : 'cpu';
if (!photo || !nativePath) throw new Error('usage: node web/large-photo.mjs PHOTO NATIVE_TOKENS.json [--backend B]');

const { server, url } = await startServer({ port: 0, quiet: true });
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'hvq-large-')), {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--no-first-run'],
});
const page = ctx.pages()[0] ?? (await ctx.newPage());
const log = [];
page.on('console', (m) => log.push(m.text()));
await page.goto(`${url}?model=model.safetensors&backend=${backend}`);
await page.waitForFunction(() => ['ready', 'error'].includes(window.hvqDemo?.state), null, { timeout: 240_000 });
await page.selectOption('#max-side', '0');
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
  photo, backend, state: res.state, message: res.message, width: res.result?.width, height: res.result?.height,
  tilesTotal: encodeTiles.at(-1)?.total, encodeProgressEvents: encodeTiles.length,
  encodeMs: res.result?.encodeMs, wallSeconds: wall, levels,
  psnr: res.result?.levels?.map((l) => ({ level: l.level, psnr: l.psnr })),
}));
await ctx.close();
server.close();
