"""Compares two rate–distortion sweeps (tables printed by the `rd_sweep` example) at equal quality and at
equal rate: for every row of AFTER with λ > 0 and each level, the rate BEFORE's curve needs for the same
PSNR and the PSNR it reaches at the same rate, both by linear interpolation between BEFORE's rows (its
λ = 0 row included); "–" where AFTER's point lies outside BEFORE's range.

    python3 scripts/rd_compare.py docs/results/rate-distortion-sweep-c837fe9.md docs/results/rate-distortion-sweep.md
"""
import sys


def read(path):
    """{level: [(bpp, psnr, lam), ...]} from a markdown table `| λ | level | prefix bpp | PSNR dB |`."""
    levels = {}
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4:
            continue
        try:
            lam, level, bpp, psnr = float(cells[0]), int(cells[1]), float(cells[2]), float(cells[3])
        except ValueError:
            continue
        levels.setdefault(level, []).append((bpp, psnr, lam))
    return levels


def interp(points, x, xi, yi):
    """y at x on the polyline through `points` sorted by coordinate xi; None outside it."""
    pts = sorted(points, key=lambda p: p[xi])
    for a, b in zip(pts, pts[1:]):
        if a[xi] <= x <= b[xi] and b[xi] > a[xi]:
            t = (x - a[xi]) / (b[xi] - a[xi])
            return a[yi] + t * (b[yi] - a[yi])
    return None


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: rd_compare.py BEFORE.md AFTER.md")
    before, after = read(sys.argv[1]), read(sys.argv[2])
    print("| λ | level | bpp | PSNR | bpp before at that PSNR | rate change | PSNR before at that bpp | PSNR change |")
    print("|---|---|---|---|---|---|---|---|")
    for level in sorted(after, reverse=True):
        for bpp, psnr, lam in sorted(after[level], key=lambda p: p[2]):
            if lam == 0 or level not in before:
                continue
            # Rate as a function of PSNR needs a monotone curve: BEFORE's bpp rises with PSNR.
            rate = interp(before[level], psnr, 1, 0)
            quality = interp(before[level], bpp, 0, 1)
            rate_s = f"{rate:.4f} | {100 * (bpp / rate - 1):+.1f} %" if rate else "– | –"
            qual_s = f"{quality:.2f} | {psnr - quality:+.2f} dB" if quality else "– | –"
            print(f"| {lam:g} | {level} | {bpp:.4f} | {psnr:.2f} | {rate_s} | {qual_s} |")


if __name__ == "__main__":
    main()
