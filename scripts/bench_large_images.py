#!/usr/bin/env python3
"""Peak memory and time of `hvq encode` / `hvq decode` on large photos (issue 13).

Usage (from the repository root, after `cargo build --release -p hvq-cli`):

    .venv/bin/python scripts/bench_large_images.py [--sizes 0.4,4,16,48] [--backend cpu]
        [--source ../shared/data/kodak/kodim23.png] [--out docs/bench-large-images]
        [--seams 4]

For each size in megapixels it makes a JPEG photo (quality 92, 3:2) by Lanczos-resizing the
source photo (Kodak is used for evaluation only, never for training; the generated pixels stay in a
temporary folder and are never committed), then runs the release `hvq` under `/usr/bin/time -v`
and records wall time, peak RSS, the `.hvq` size and the tile count. `--seams N` also encodes and
decodes the N-megapixel photo whole (`--tile 0`) and reports PSNR of the tiled and the whole
decode against the photo, and the PSNR between them: what tiling costs in quality.

Writes OUT.json and OUT.md.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HVQ = os.path.join(ROOT, "target", "release", "hvq")


def make_photo(source, megapixels, path):
    src = Image.open(source).convert("RGB")
    aspect = src.width / src.height
    h = int(round(math.sqrt(megapixels * 1e6 / aspect)))
    w = int(round(h * aspect))
    src.resize((w, h), Image.LANCZOS).save(path, quality=92)
    return w, h


def timed(args):
    """Runs `hvq ARGS` under /usr/bin/time -v; returns (seconds, peak RSS in MB, stderr)."""
    cmd = ["/usr/bin/time", "-v", HVQ] + args
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", p.stderr).group(1)
    parts = [float(x) for x in wall.split(":")]
    seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return seconds, rss_kb / 1024, p.stderr


def psnr(a, b):
    a = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.4,4,16,48")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--source", default=os.path.join(ROOT, "..", "shared", "data", "kodak", "kodim23.png"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench-large-images"))
    ap.add_argument("--seams", type=float, default=0.0, help="megapixels of the tiled-vs-whole check (0: off)")
    args = ap.parse_args()
    if not os.path.exists(HVQ):
        sys.exit(f"{HVQ} missing: run `cargo build --release -p hvq-cli` first")
    base = ["--backend", args.backend]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in [float(s) for s in args.sizes.split(",")]:
            photo = os.path.join(tmp, f"photo-{mp}.jpg")
            w, h = make_photo(args.source, mp, photo)
            hvq = os.path.join(tmp, f"photo-{mp}.hvq")
            png = os.path.join(tmp, f"photo-{mp}.png")
            enc_s, enc_mb, _ = timed(base + ["encode", photo, "-o", hvq])
            dec_s, dec_mb, _ = timed(base + ["decode", hvq, "-o", png])
            size = os.path.getsize(hvq)
            row = {
                "megapixels": round(w * h / 1e6, 2), "width": w, "height": h,
                "encode_s": round(enc_s, 2), "encode_peak_mb": round(enc_mb),
                "decode_s": round(dec_s, 2), "decode_peak_mb": round(dec_mb),
                "encode_s_per_mp": round(enc_s / (w * h / 1e6), 2),
                "decode_s_per_mp": round(dec_s / (w * h / 1e6), 2),
                "hvq_bytes": size, "bpp": round(size * 8 / (w * h), 4),
                "psnr_db": round(psnr(photo, png), 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        seams = None
        if args.seams > 0:
            photo = os.path.join(tmp, "seams.jpg")
            w, h = make_photo(args.source, args.seams, photo)
            out = {}
            for label, extra in [("tiled", []), ("whole", ["--tile", "0"])]:
                hvq = os.path.join(tmp, f"seams-{label}.hvq")
                png = os.path.join(tmp, f"seams-{label}.png")
                e = timed(base + extra + ["encode", photo, "-o", hvq])
                d = timed(base + extra + ["decode", hvq, "-o", png])
                out[label] = {"png": png, "encode_s": round(e[0], 2), "encode_peak_mb": round(e[1]),
                              "decode_s": round(d[0], 2), "decode_peak_mb": round(d[1]),
                              "psnr_db": round(psnr(photo, png), 2)}
            seams = {
                "megapixels": round(w * h / 1e6, 2), "width": w, "height": h,
                "tiled": {k: v for k, v in out["tiled"].items() if k != "png"},
                "whole": {k: v for k, v in out["whole"].items() if k != "png"},
                "tiled_vs_whole_psnr_db": round(psnr(out["tiled"]["png"], out["whole"]["png"]), 2),
            }
            print(json.dumps(seams), flush=True)
    meta = {
        "command": "python scripts/bench_large_images.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads",
        "backend": args.backend,
        "source": os.path.relpath(args.source, ROOT),
    }
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "sizes": rows, "tiled_vs_whole": seams}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(f"# Large photos: peak memory and time of `hvq encode` / `hvq decode`\n\n")
        f.write(f"`{meta['command']}` — {meta['date']}, {meta['machine']}, backend `{args.backend}`, "
                f"default model, JPEG q92 photos resized from `{meta['source']}`.\n\n")
        f.write("| Mpx | size | encode s | s/Mpx | peak MB | decode s | s/Mpx | peak MB | bpp | PSNR dB |\n")
        f.write("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['megapixels']} | {r['width']}×{r['height']} | {r['encode_s']} | {r['encode_s_per_mp']} | "
                    f"{r['encode_peak_mb']} | {r['decode_s']} | {r['decode_s_per_mp']} | {r['decode_peak_mb']} | "
                    f"{r['bpp']} | {r['psnr_db']} |\n")
        if seams:
            t, wh = seams["tiled"], seams["whole"]
            f.write(f"\nTiled against whole, {seams['width']}×{seams['height']}: PSNR against the photo "
                    f"{t['psnr_db']} dB tiled, {wh['psnr_db']} dB whole; tiled against whole "
                    f"{seams['tiled_vs_whole_psnr_db']} dB. Whole: encode {wh['encode_s']} s / "
                    f"{wh['encode_peak_mb']} MB, decode {wh['decode_s']} s / {wh['decode_peak_mb']} MB.\n")


if __name__ == "__main__":
    main()
