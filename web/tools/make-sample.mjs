// Draws the bundled sample image procedurally (a deterministic, photo-like 256×256 landscape):
//   node web/tools/make-sample.mjs [out.png] [size]
// The project ships only images it generates itself; no third-party photos live in the repository.
import { writeFileSync } from 'node:fs';
import { encodePng } from './png.mjs';

const out = process.argv[2] ?? new URL('../sample.png', import.meta.url).pathname;
const N = Number(process.argv[3] ?? 256);

// Seeded value noise (mulberry32 lattice, smooth-step interpolation, octaves).
function lattice(seed) {
  const size = 256, t = new Float32Array(size * size);
  let s = seed >>> 0;
  for (let i = 0; i < t.length; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    t[i] = ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  }
  return (x, y) => {
    const xi = Math.floor(x), yi = Math.floor(y), fx = x - xi, fy = y - yi;
    const sx = fx * fx * (3 - 2 * fx), sy = fy * fy * (3 - 2 * fy);
    const at = (i, j) => t[((j & 255) << 8) | (i & 255)];
    const a = at(xi, yi), b = at(xi + 1, yi), c = at(xi, yi + 1), d = at(xi + 1, yi + 1);
    return a + (b - a) * sx + (c - a) * sy + (a - b - c + d) * sx * sy;
  };
}
const fbm = (n, x, y, oct) => {
  let v = 0, amp = 0.5, f = 1;
  for (let o = 0; o < oct; o++, amp *= 0.5, f *= 2) v += amp * n(x * f, y * f);
  return v;
};
const n1 = lattice(1), n2 = lattice(2), n3 = lattice(3);
const mix = (a, b, t) => a.map((v, i) => v + (b[i] - v) * t);
const clamp = (v) => Math.max(0, Math.min(255, Math.round(v)));

const rgb = new Uint8Array(N * N * 3);
const horizon = 0.62;
for (let py = 0; py < N; py++) {
  for (let px = 0; px < N; px++) {
    const u = px / N, v = py / N;
    // Sky: gradient, sun with halo, soft clouds.
    let c = mix([70, 120, 200], [235, 200, 160], Math.pow(v / horizon, 1.6));
    const sd = Math.hypot(u - 0.72, v - 0.3);
    c = mix(c, [255, 240, 200], Math.max(0, 0.35 - sd) * 1.8);
    if (sd < 0.06) c = [255, 250, 225];
    const cl = fbm(n1, u * 6, v * 14, 5);
    c = mix(c, [250, 250, 252], Math.max(0, cl - 0.52) * 2.2 * (1 - v / horizon));
    // Two mountain ranges with noisy ridges.
    const far = 0.42 + 0.1 * fbm(n2, u * 4, 0.5, 5);
    const near = 0.5 + 0.12 * fbm(n3, u * 3 + 7, 1.5, 6);
    if (v > far) c = mix([105, 115, 150], [85, 95, 125], fbm(n2, u * 20, v * 20, 3));
    if (v > far && v < far + 0.03 && u > 0.1) c = mix(c, [240, 240, 245], 0.7); // snow line
    if (v > near) {
      const rock = fbm(n3, u * 30, v * 30, 4);
      c = mix([60, 90, 55], [95, 80, 60], rock);
    }
    // Lake with a rippled reflection of the sky.
    if (v > horizon) {
      const ry = 2 * horizon - v + 0.01 * Math.sin(v * 220 + 3 * fbm(n1, u * 8, v * 8, 2));
      const refl = mix([70, 120, 200], [235, 200, 160], Math.pow(Math.max(0, ry) / horizon, 1.6));
      c = mix(refl, [30, 60, 90], 0.45 + 0.25 * (v - horizon));
      // Grass shore in the foreground.
      const shore = 0.86 + 0.05 * Math.sin(u * 9) + 0.03 * fbm(n2, u * 12, 3, 4);
      if (v > shore) {
        const g = fbm(n1, u * 60, v * 18, 4);
        c = mix([40, 95, 30], [150, 160, 60], g);
      }
    }
    // A small red-roofed house on the near slope.
    const hx = u - 0.2, hy = v - 0.56;
    if (hx > 0 && hx < 0.09 && hy > 0 && hy < 0.05) c = [225, 215, 190];
    if (hy <= 0 && hy > -0.04 && Math.abs(hx - 0.045) < 0.055 + hy * 1.3) c = [170, 45, 35];
    if (hx > 0.055 && hx < 0.075 && hy > 0.02 && hy < 0.05) c = [80, 55, 40];
    // Sensor-like grain.
    const grain = (n2(px * 1.7, py * 1.3) - 0.5) * 10;
    const o = (py * N + px) * 3;
    for (let k = 0; k < 3; k++) rgb[o + k] = clamp(c[k] + grain);
  }
}
writeFileSync(out, encodePng({ width: N, height: N, rgb }));
console.log(`wrote ${out} (${N}×${N})`);
