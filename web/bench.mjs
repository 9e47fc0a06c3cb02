// Benchmark: encode and decode time of one 256×256 image in headless Chromium (WebGPU on SwiftShader,
// and the CPU backend in wasm) against the native codec (wgpu on lavapipe, and the CPU backend) on
// this machine, same weights and image, in one run. Prints a table.
//
//   bash scripts/web-test.sh        # once, to build web/pkg and web/model.safetensors
//   node web/bench.mjs [--reps 5] [--cpu-reps 3] [--image web/sample.png] [--model model.safetensors (in web/)]
//                      [--timeout-s 900] [--backends webgpu,cpu]
// --reps: timed repetitions on wgpu/WebGPU after the first call; 0 times the first calls only
// (pipelines compiled then), for a model that takes minutes per call on a software adapter.
// --cpu-reps: the same for the CPU backends. --timeout-s: how long one browser backend may take.
// --backends: which to time (webgpu = wgpu natively and WebGPU in the browser; cpu = both CPU backends).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const WEB = new URL('.', import.meta.url).pathname;
const ROOT = join(WEB, '..');
const args = process.argv.slice(2);
const opt = (k, d) => (args.includes(`--${k}`) ? args[args.indexOf(`--${k}`) + 1] : d);
const reps = Number(opt('reps', 5));
const cpuReps = Number(opt('cpu-reps', Math.min(reps, 3)));
const timeoutMs = 1000 * Number(opt('timeout-s', 900));
const backends = opt('backends', 'webgpu,cpu').split(',');
const image = opt('image', join(WEB, 'sample.png'));
const model = opt('model', 'model.safetensors'); // relative to web/

for (const f of ['pkg/hvq_wasm_bg.wasm', model]) {
  if (!existsSync(join(WEB, f))) {
    console.error(`bench: web/${f} is missing; run \`bash scripts/web-test.sh\` first`);
    process.exit(1);
  }
}

/** The Vulkan loader wants a private XDG_RUNTIME_DIR (as scripts/env.sh sets). */
function xdgEnv() {
  const dir = process.env.XDG_RUNTIME_DIR ?? '/tmp/hvq-xdg';
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return { ...process.env, XDG_RUNTIME_DIR: dir };
}

// Native first (the browser would compete for the two cores otherwise).
console.error('bench: native (hvq-codec: wgpu on the local adapter, and CPU)…');
execFileSync('cargo', ['build', '-q', '--release', '-p', 'hvq-wasm', '--example', 'native_bench'], { cwd: ROOT, stdio: 'inherit' });
const nativeOut = execFileSync(join(ROOT, 'target/release/examples/native_bench'),
  [join(WEB, model), image, String(reps), String(cpuReps)], {
    cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...xdgEnv(), HVQ_BENCH_BACKENDS: backends.map((b) => (b === 'webgpu' ? 'wgpu' : b)).join(',') },
  });
const rows = nativeOut.trim().split('\n').map((l) => ({ where: 'native', ...JSON.parse(l) }));

const { server, url } = await startServer({ port: 0, root: WEB, quiet: true });
const dir = mkdtempSync(join(tmpdir(), 'hvq-bench-'));
const ctx = await chromium.launchPersistentContext(dir, {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let version = '';
try {
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  version = ctx.browser()?.version() ?? '';
  for (const backend of backends) {
    console.error(`bench: browser, ${backend}…`);
    // The page fetches the image from the server: copy one from elsewhere into web/pkg (ignored).
    let imgRel = relative(WEB, image);
    if (imgRel.startsWith('..')) {
      copyFileSync(image, join(WEB, 'pkg', 'bench-input.png'));
      imgRel = 'pkg/bench-input.png';
    }
    await page.goto(`${url}bench.html?backend=${backend}&reps=${backend === 'cpu' ? cpuReps : reps}&image=${imgRel}&model=${model}`);
    await page.waitForFunction(() => window.benchResult, null, { timeout: timeoutMs, polling: 1000 });
    const r = await page.evaluate(() => window.benchResult);
    if (r.error) throw new Error(`browser ${backend}: ${r.error}`);
    if (!version) version = (r.userAgent.match(/Chrome\/[\d.]+/) ?? [''])[0];
    rows.push({ where: 'browser', ...r });
  }
} finally {
  await ctx.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
}

const levels = Object.keys(rows[0].firstDecodeMs).sort((a, b) => b - a);
const f = (v) => (v === undefined || v === null ? '–' : v.toFixed(0)).padStart(9);
const name = (r) => `${r.where} ${r.backend === 'webgpu' ? 'WebGPU (SwiftShader)' : r.backend === 'wgpu' ? 'wgpu (native adapter)' : `${r.backend}`}`;
console.log(`\nhvq benchmark, ${rows[0].width}×${rows[0].height} image, ${opt('model', 'model.safetensors')}; ms; ` +
  `median of ${reps} runs after the first (CPU backends: ${cpuReps}); ` +
  ` ${new Date().toISOString().slice(0, 10)}, ${cpus().length}× ${cpus()[0]?.model ?? 'cpu'}, Chromium ${version}`);
console.log(`${'backend'.padEnd(34)}${'create'.padStart(9)}${'1st enc'.padStart(9)}` +
  levels.map((l) => `1st L${l}`.padStart(9)).join('') + `${'encode'.padStart(9)}` +
  levels.map((l) => `dec L${l}`.padStart(9)).join(''));
for (const r of rows) {
  console.log(`${name(r).padEnd(34)}${f(r.createMs)}${f(r.firstEncodeMs)}` + levels.map((l) => f(r.firstDecodeMs[l])).join('') +
    `${f(r.encodeMs)}` + levels.map((l) => f(r.decodeMs[l])).join(''));
}
console.log('encode = image → .hvq with every level; dec Ln = .hvq → RGB of level n (L0 finest); ' +
  '1st = first call (pipelines compiled, buffers made); – = not timed (0 repetitions).');
