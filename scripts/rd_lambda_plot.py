#!/usr/bin/env python3
"""Plots rate-distortion encoding (`hvq encode --rd-lambda`) on Kodak: hvq's PSNR against the prefix bpp
for each level as lambda grows (the table `cargo run --release -p hvq-codec --example rd_sweep` prints),
with JPEG, WebP and AVIF from `scripts/rd_kodak.py` runs (each searched at one hvq run's rates).

    .venv/bin/python scripts/rd_lambda_plot.py docs/results/rate-distortion-sweep.md \
        docs/rd-kodak-prefix.json docs/rd-kodak-prefix-rd0.1.json --out docs/results/rate-distortion.png
"""
import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def sweep_rows(path):
    rows = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0][:1].isdigit():
            rows.append(dict(lam=float(cells[0]), level=int(cells[1]), bpp=float(cells[2]), psnr=float(cells[3])))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep")
    ap.add_argument("classic", nargs="*", help="rd_kodak.py JSON files")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sweep = sweep_rows(args.sweep)
    levels = sorted({r["level"] for r in sweep})
    fig, ax = plt.subplots(figsize=(7, 5))
    colours = {"jpeg": "tab:orange", "webp": "tab:green", "avif": "tab:red"}
    for level in levels:
        pts = sorted((r for r in sweep if r["level"] == level), key=lambda r: r["lam"])
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], "o-", color="tab:blue",
                label="hvq, λ = " + ", ".join(f"{p['lam']:g}" for p in pts) if level == levels[0] else None)
        ax.annotate(f"level {level}", (pts[0]["bpp"], pts[0]["psnr"]), textcoords="offset points", xytext=(4, -12))
    # Each classic codec: its mean (bpp, PSNR) per level and run, joined per level.
    classic = defaultdict(list)
    for path in args.classic:
        rows = json.load(open(path))
        for codec in colours:
            for level in levels:
                sel = [r for r in rows if r["codec"] == codec and r["level"] == level]
                if sel:
                    classic[(codec, level)].append((np.mean([r["bpp"] for r in sel]), np.mean([r["psnr"] for r in sel])))
    for codec, colour in colours.items():
        for i, level in enumerate(levels):
            pts = sorted(classic.get((codec, level), []))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color=colour, alpha=0.8,
                        label=codec if i == 0 else None)
    ax.set(xscale="log", xlabel="bits per pixel (prefix of the .hvq file; the classic codec's file)",
           ylabel="PSNR (dB)", title="Kodak (24 images): rate-distortion encoding of the embedded model")
    ticks = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
