// Crops a PNG:  node web/tools/crop-png.mjs IN.png OUT.png X Y WIDTH HEIGHT
import { readFileSync, writeFileSync } from 'node:fs';
import { crop, decodePng, encodePng } from './png.mjs';

const [input, output, ...nums] = process.argv.slice(2);
const [x, y, w, h] = nums.map(Number);
if (!output || [x, y, w, h].some((v) => !Number.isInteger(v))) {
  console.error('usage: crop-png.mjs IN.png OUT.png X Y WIDTH HEIGHT');
  process.exit(2);
}
const img = decodePng(readFileSync(input));
if (x + w > img.width || y + h > img.height) {
  console.error(`crop ${w}×${h} at (${x}, ${y}) does not fit a ${img.width}×${img.height} image`);
  process.exit(1);
}
writeFileSync(output, encodePng(crop(img, x, y, w, h)));
