#!/usr/bin/env python3
"""Links the trainer's held-out photos into a folder: the 50 files of a data folder whose names have the
lowest FNV-1a-64 hashes (train/src/data.rs, `Dataset::open`; `val_count` 50), for measuring on photos
that nothing was fitted on.

    python3 scripts/heldout_split.py ../shared/data/imagenet-sample runs/heldout   # then runs/heldout/*.JPEG
"""
import os
import sys

EXTENSIONS = (".jpg", ".jpeg", ".png")  # those of the sample folder


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) == 4 else 50
    files = sorted(f for f in os.listdir(src) if f.lower().endswith(EXTENSIONS))
    held = sorted(sorted(files, key=fnv1a64)[:count])
    os.makedirs(out, exist_ok=True)
    for f in held:
        link = os.path.join(out, f)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(src, f)), link)
    print(f"{len(held)} held-out photos linked under {out}")


if __name__ == "__main__":
    main()
