#!/usr/bin/env python3
"""What the context model (coding 2, docs/format.md §4.3) saves on Kodak: every image is encoded with a
weight file as it is and with a copy whose `hvq.context` metadata is removed (so the writer can only pick
coding 0 or 1), and the chunks' sizes are compared per level.

    .venv/bin/python scripts/context_gain.py [--model codec/models/default.safetensors] [--kodak ../shared/data/kodak]

Prints a Markdown table of mean bits per pixel per level chunk and per prefix (what a reader pays to show
that level), with and without the context model, and checks that every file decodes to the same tokens
(`hvq tokens`) either way.
"""
import argparse
import json
import os
import struct
import subprocess
import tempfile

from PIL import Image


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


def without_context(src, dst):
    """Copies a safetensors file without its `hvq.context` metadata (tensor bytes unchanged)."""
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header["__metadata__"].pop("hvq.context", None)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def chunk_bytes(hvq, path, model):
    """Per level (coarsest first): chunk bytes and coding, from `hvq info`."""
    out = run([hvq, "info", path, "--model", model])
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[0].isdigit() and "×" in parts[1]:
            rows.append((int(parts[0]), int(parts[2]), parts[5]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="codec/models/default.safetensors")
    ap.add_argument("--kodak", default="../shared/data/kodak")
    ap.add_argument("--hvq", default="target/release/hvq")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    args = ap.parse_args()
    images = sorted(f for f in os.listdir(args.kodak) if f.endswith(".png"))
    if args.limit:
        images = images[: args.limit]
    with tempfile.TemporaryDirectory() as work:
        plain_model = os.path.join(work, "no-context.safetensors")
        without_context(args.model, plain_model)
        sums = {}
        codings = {}
        header_bits = 0.0
        for name in images:
            src = os.path.join(args.kodak, name)
            w, h = Image.open(src).size
            for tag, model in (("context", args.model), ("without", plain_model)):
                out = os.path.join(work, f"{name}.{tag}.hvq")
                run([args.hvq, "encode", src, "-o", out, "--model", model, "--backend", "cpu"])
                toks = run([args.hvq, "tokens", out, "--model", model])
                sums.setdefault(("tokens", tag), []).append(toks)
                total = os.path.getsize(out)
                rows = chunk_bytes(args.hvq, out, model)
                header_bits += (total - sum(b for _, b, _ in rows)) * 8 / (w * h) / 2
                for level, b, coding in rows:
                    sums.setdefault((level, tag), []).append(b * 8 / (w * h))
                    codings.setdefault((level, tag), set()).add(coding)
        for t_ctx, t_plain in zip(sums[("tokens", "context")], sums[("tokens", "without")]):
            assert t_ctx == t_plain, "the two files decode to different tokens"
        n = len(images)
        levels = sorted({k[0] for k in sums if k[0] != "tokens"}, reverse=True)
        head = header_bits / n
        print(f"Kodak, {n} images, `{args.model}`; mean bits per pixel (file header {head:.4f} bpp included in prefixes)\n")
        print("| level | chunk, context model | chunk, without | ratio | prefix, context model | prefix, without | codings used (context / without) |")
        print("|---|---|---|---|---|---|---|")
        pre = {"context": head, "without": head}
        for level in levels:
            c = sum(sums[(level, "context")]) / n
            p = sum(sums[(level, "without")]) / n
            pre["context"] += c
            pre["without"] += p
            used = " / ".join(",".join(sorted(codings[(level, t)])) for t in ("context", "without"))
            print(f"| {level} | {c:.4f} | {p:.4f} | {c / p:.3f} | {pre['context']:.4f} | {pre['without']:.4f} | {used} |")


if __name__ == "__main__":
    main()
