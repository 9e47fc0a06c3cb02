"""Codebook sharing over many images, from `hvq tokenize-dir` output (no decoding, no LPIPS, so it
runs on all 1000 photos in minutes on the CPU; `hvq-train eval` measures the same on fewer images).

    .venv/bin/python scripts/sharing_tokens.py crop ../shared/data/imagenet-sample /tmp/crops
    target/release/hvq tokenize-dir --backend cpu -j 2 -o /tmp/tok /tmp/crops [-m WEIGHTS]
    .venv/bin/python scripts/sharing_tokens.py stats /tmp/tok [CODEBOOK_SIZE]   # default 8192 (`small`)

`crop`: the shorter side resized to 256 (PIL bilinear, not the trainer's resize), then the central
256x256 square, as the paper evaluates. `stats`: per level the entries used; entries used by every
level against what independent choice would give (N * prod(u_i / N)); the share of the coarsest
level's entries used by every level; the share of coarse tokens on entries level 0 uses; and, since
with many images the finest level uses nearly every entry, the same with "used at least 5 times".
"""
import json
import os
import sys

import numpy as np


def crop(src, dst):
    from PIL import Image, ImageOps
    os.makedirs(dst, exist_ok=True)
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    for i, f in enumerate(files):
        im = ImageOps.exif_transpose(Image.open(f)).convert("RGB")
        s = 256 / min(im.size)
        im = im.resize((max(256, round(im.size[0] * s)), max(256, round(im.size[1] * s))), Image.BILINEAR)
        left, top = (im.size[0] - 256) // 2, (im.size[1] - 256) // 2
        im.crop((left, top, left + 256, top + 256)).save(os.path.join(dst, "%04d.png" % i))
    print(f"wrote {len(files)} crops to {dst}")


def stats(tok, n=8192):
    manifest = json.load(open(os.path.join(tok, "manifest.json")))
    levels = sorted(manifest["levels"])  # finest first; the manifest does not hold the codebook size
    shards = sorted(d for d in os.listdir(tok) if d.startswith("shard-"))
    lv = [np.concatenate([np.load(os.path.join(tok, s, f"level{l}.npy")).astype(np.int64) for s in shards])
          for l in levels]
    if max(int(x.max()) for x in lv) >= n:
        sys.exit(f"a token is >= {n}: give the model's codebook size")
    counts = [np.bincount(x, minlength=n) for x in lv]
    for k in (1, 5):
        used = [c >= k for c in counts]
        every = np.logical_and.reduce(used)
        chance = n * np.prod([u.sum() / n for u in used])
        print(f"used at least {k}x: per level {' / '.join(str(int(u.sum())) for u in used)}, "
              f"by every level {int(every.sum())} (chance {chance:.0f}), coarsest level's entries used by "
              f"every level {100 * every[used[-1]].sum() / used[-1].sum():.1f} %")
    on0 = counts[0] > 0
    print("tokens on entries level 0 uses: " + ", ".join(
        f"level {levels[i]} {100 * on0[lv[i]].mean():.1f} %" for i in range(1, len(lv))))
    print(f"tokens per level: {' / '.join(str(len(x)) for x in lv)} ({len(shards)} shards)")


if __name__ == "__main__":
    {"crop": lambda: crop(sys.argv[2], sys.argv[3]), "stats": lambda: stats(sys.argv[2], *map(int, sys.argv[3:4]))}[sys.argv[1]]()
