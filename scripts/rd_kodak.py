#!/usr/bin/env python3
"""Rate–distortion of hvq against JPEG, WebP and AVIF on Kodak, at matching bits per pixel.

For every Kodak image and every hvq level, encodes the `.hvq` file that a reader of the scalable format
pays for to show that level (the prefix holding that level and every coarser one; `--rate single` for a
file holding only that level), decodes it, and measures bits per pixel, PSNR and LPIPS-Alex. Then,
for the same image, searches each classic codec's quality setting for the file whose bpp is closest to
that level's bpp, and measures the same. Writes a Markdown table, JSON and a plot.

Run through scripts/rd-kodak.sh, which builds the tools first. Never trains on Kodak: it only reads it.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


def load_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def psnr(a, b):
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def bpp(path, w, h):
    return os.path.getsize(path) * 8 / (w * h)


class Classic:
    """A classic codec driven through Debian's command-line encoders."""

    def __init__(self, name, qualities, encode, decode, ext):
        self.name, self.qualities, self.encode, self.decode, self.ext = name, qualities, encode, decode, ext

    def at_bpp(self, src_png, src_ppm, w, h, target, work):
        """Quality whose file is closest to `target` bpp (binary search; size is monotone in quality)."""
        lo, hi = 0, len(self.qualities) - 1
        tried = {}

        def attempt(i):
            if i not in tried:
                out = os.path.join(work, f"{self.name}-{i}.{self.ext}")
                self.encode(self.qualities[i], src_png, src_ppm, out)
                tried[i] = (bpp(out, w, h), out)
            return tried[i]

        while lo < hi:
            mid = (lo + hi) // 2
            if attempt(mid)[0] < target:
                lo = mid + 1
            else:
                hi = mid
        cands = [attempt(lo)] + ([attempt(lo - 1)] if lo > 0 else [])
        rate, path = min(cands, key=lambda c: abs(c[0] - target))
        png = path + ".png"
        self.decode(path, png)
        return rate, png


def classic_codecs():
    jpeg = Classic(
        "jpeg", list(range(1, 101)),
        lambda q, png, ppm, out: run(["cjpeg", "-quality", str(q), "-optimize", "-outfile", out, ppm]),
        lambda f, png: Image.open(f).convert("RGB").save(png), "jpg")
    webp = Classic(
        "webp", list(range(0, 101)),
        lambda q, png, ppm, out: run(["cwebp", "-quiet", "-q", str(q), "-m", "6", png, "-o", out]),
        lambda f, png: run(["dwebp", "-quiet", f, "-o", png]), "webp")
    # avifenc 0.11 takes quantizers 0 (best) .. 63 (worst): list them worst first so size grows with index.
    avif = Classic(
        "avif", list(range(63, -1, -1)),
        lambda q, png, ppm, out: run(["avifenc", "-s", "6", "--min", str(q), "--max", str(q), png, out]),
        lambda f, png: run(["avifdec", f, png]), "avif")
    return [jpeg, webp, avif]


def lpips_pairs(compare_bin, pairs, work):
    """LPIPS-Alex of (reference, test) pairs via the trainer's `hvq-compare` (libtorch)."""
    lst = os.path.join(work, "pairs.txt")
    with open(lst, "w") as f:
        for a, b in pairs:
            f.write(f"{a}\t{b}\n")
    out = run([compare_bin, "--pairs", lst])
    return [json.loads(line)["lpips_alex"] for line in out.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kodak", default="../shared/data/kodak")
    ap.add_argument("--hvq", default="target/release/hvq")
    ap.add_argument("--compare", default="target/release/hvq-compare")
    ap.add_argument("--model", default=None, help="weights; default: the embedded model")
    ap.add_argument("--levels", default="0,1,2")
    ap.add_argument("--model-levels", type=int, default=3, help="levels of the model (coarsest = this - 1)")
    ap.add_argument("--rate", choices=["prefix", "single"], default="prefix",
                    help="prefix: the rate a reader pays, the scalable file's prefix that decodes the level "
                         "(that level and every coarser one); single: a file holding only that level")
    ap.add_argument("--rd-lambda", type=float, default=0.0,
                    help="hvq encode --rd-lambda: rate-distortion token choice (0: the quantizer's own tokens)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all 24)")
    ap.add_argument("--out", default="docs/rd-kodak")
    ap.add_argument("--from-json", default=None, help="only redo the table and plot from an earlier run's JSON")
    args = ap.parse_args()
    if args.from_json:
        rows = json.load(open(args.from_json))
        levels = sorted({r["level"] for r in rows})
        report(rows, levels, args.out, len({r["image"] for r in rows}))
        return

    images = sorted(f for f in os.listdir(args.kodak) if f.endswith(".png"))
    if args.limit:
        images = images[: args.limit]
    levels = [int(x) for x in args.levels.split(",")]
    model = ["--model", args.model] if args.model else []
    codecs = classic_codecs()
    rows = []  # one per (image, level, codec)
    pairs = []
    with tempfile.TemporaryDirectory() as work:
        for name in images:
            src = os.path.join(args.kodak, name)
            ref = load_rgb(src)
            h, w = ref.shape[:2]
            ppm = os.path.join(work, name + ".ppm")
            Image.open(src).convert("RGB").save(ppm)
            for level in levels:
                hvq_file = os.path.join(work, f"{name}.l{level}.hvq")
                stored = [level] if args.rate == "single" else list(range(level, args.model_levels))
                run([args.hvq, "encode", src, "-o", hvq_file, "--levels", ",".join(map(str, stored)),
                     "--backend", "cpu", "--rd-lambda", str(args.rd_lambda), *model])
                dec = hvq_file + ".png"
                run([args.hvq, "decode", hvq_file, "-o", dec, "--level", str(level), "--backend", "cpu", *model])
                rate = bpp(hvq_file, w, h)
                rows.append(dict(image=name, level=level, codec="hvq", bpp=rate, psnr=psnr(ref, load_rgb(dec))))
                pairs.append((src, dec))
                for c in codecs:
                    crate, cpng = c.at_bpp(src, ppm, w, h, rate, work)
                    rows.append(dict(image=name, level=level, codec=c.name, bpp=crate, psnr=psnr(ref, load_rgb(cpng)),
                                     target_bpp=rate))
                    keep = os.path.join(work, f"{name}.l{level}.{c.name}.png")
                    os.replace(cpng, keep)
                    pairs.append((src, keep))
                print(f"{name} level {level}: hvq {rate:.4f} bpp", file=sys.stderr, flush=True)
        for row, score in zip(rows, lpips_pairs(args.compare, pairs, work)):
            row["lpips_alex"] = score
    for r in rows:
        r["rate"] = args.rate
        r["rd_lambda"] = args.rd_lambda
    report(rows, levels, args.out, len(images))


def report(rows, levels, out, n_images):
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    rate = rows[0].get("rate", "single") if rows else "single"
    what = ("the prefix of the scalable file that decodes the level" if rate == "prefix"
            else "a file holding only that level")
    lam = rows[0].get("rd_lambda", 0.0) if rows else 0.0
    chosen = (f" hvq's tokens were chosen by rate and distortion (`hvq encode --rd-lambda {lam:g}`)." if lam
              else "")
    lines = [f"Kodak, {n_images} images; hvq's rate is {what}.{chosen} Means over images. "
             "Each classic codec's quality was searched per image for the",
             "file closest to that image's hvq bpp; where a codec cannot go that low, its smallest file is used (higher bpp).",
             "", "| level | codec | bpp | PSNR (dB) | LPIPS-Alex |", "| --- | --- | --- | --- | --- |"]
    summary = {}
    for level in levels:
        for codec in ["hvq", "jpeg", "webp", "avif"]:
            sel = [r for r in rows if r["level"] == level and r["codec"] == codec]
            if not sel:
                continue
            m = {k: float(np.mean([r[k] for r in sel])) for k in ["bpp", "psnr", "lpips_alex"]}
            summary[(level, codec)] = m
            lines.append(f"| {level} | {codec} | {m['bpp']:.4f} | {m['psnr']:.2f} | {m['lpips_alex']:.3f} |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(summary, levels, out + ".png")


def plot(summary, levels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for codec, style in [("hvq", "o-"), ("jpeg", "s--"), ("webp", "^--"), ("avif", "d--")]:
        pts = sorted((summary[(l, codec)] for l in levels if (l, codec) in summary), key=lambda m: m["bpp"])
        if not pts:
            continue
        axes[0].plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], style, label=codec)
        axes[1].plot([p["bpp"] for p in pts], [p["lpips_alex"] for p in pts], style, label=codec)
    axes[0].set(xlabel="bits per pixel", ylabel="PSNR (dB)", title="Kodak: PSNR vs rate", xscale="log")
    axes[1].set(xlabel="bits per pixel", ylabel="LPIPS-Alex (lower is better)", title="Kodak: LPIPS vs rate", xscale="log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in axes:
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
