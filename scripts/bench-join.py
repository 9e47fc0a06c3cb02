#!/usr/bin/env python3
"""Joins the wgpu bench's JSON (HVQ_BENCH_JSON) with `hvq-train codec-bench --json` on
(preset, width, height, batch, op, level) and prints a Markdown table of both times, the
wgpu/libtorch ratio and each side's images/s and GFLOP/s. wgpu rows carry their kernels'
precision (f32 or f16); each is compared with the same libtorch row (libtorch runs f32).

    python3 scripts/bench-join.py WGPU.json LIBTORCH.json [FP32_PEAK_TFLOPS]
"""
import json
import sys


def key(r):
    return (r["preset"], r["width"], r["height"], r["batch"], r["op"], r["level"])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    wgpu = {key(r) + (r.get("precision", "f32"),): r for r in json.load(open(sys.argv[1]))}
    torch = {key(r): r for r in json.load(open(sys.argv[2]))}
    peak = float(sys.argv[3]) if len(sys.argv) > 3 else None
    head = "| preset | size | batch | op | wgpu precision | wgpu ms | libtorch ms | wgpu / libtorch | wgpu images/s | libtorch images/s | wgpu GFLOP/s |"
    if peak:
        head += " wgpu % of FP32 peak |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for k in sorted(wgpu, key=lambda k: (k[0], k[1] * k[2], k[3], k[4] != "encode", k[5] or 0, k[6] != "f32")):
        w = wgpu[k]
        t = torch.get(k[:6])
        op = "encode" if k[4] == "encode" else f"decode {k[5]}"
        ratio = f"{w['median_ms'] / t['median_ms']:.2f}" if t else "–"
        row = (
            f"| {k[0]} | {k[1]}x{k[2]} | {k[3]} | {op} | {k[6]} | {w['median_ms']:.2f} | "
            f"{t['median_ms']:.2f} | {ratio} | {w['images_per_s']:.1f} | {t['images_per_s']:.1f} | "
            if t
            else f"| {k[0]} | {k[1]}x{k[2]} | {k[3]} | {op} | {k[6]} | {w['median_ms']:.2f} | – | – | "
            f"{w['images_per_s']:.1f} | – | "
        )
        row += f"{w['gflop_per_s']:.0f} |"
        if peak:
            row += f" {100 * w['gflop_per_s'] / (peak * 1e3):.1f} % |"
        print(row)


if __name__ == "__main__":
    main()
