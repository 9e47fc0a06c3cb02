// Crops a PNG, then optionally shrinks it by an integer factor (box filter):
//   node web/tools/crop-png.mjs IN.png OUT.png X Y WIDTH HEIGHT [FACTOR]
import { readFileSync, writeFileSync } from 'node:fs';
import { crop, decodePng, encodePng, shrink } from './png.mjs';

const [input, output, ...nums] = process.argv.slice(2);
const [x, y, w, h, factor = 1] = nums.map(Number);
if (!output || [x, y, w, h, factor].some((v) => !Number.isInteger(v)) || factor < 1) {
  console.error('usage: crop-png.mjs IN.png OUT.png X Y WIDTH HEIGHT [FACTOR]');
  process.exit(2);
}
const img = decodePng(readFileSync(input));
if (x + w > img.width || y + h > img.height) {
  console.error(`crop ${w}×${h} at (${x}, ${y}) does not fit a ${img.width}×${img.height} image`);
  process.exit(1);
}
writeFileSync(output, encodePng(shrink(crop(img, x, y, w, h), factor)));
