"""Time decoding + caching all of HAM10000 at 64, 128 and 224 px, then reading it back.

Run by hand (never in the test suite):  .venv/bin/python benchmarks/bench_data.py [--data PATH]
Prints a markdown table for benchmarks/README.md. Uses a fresh temporary cache each time.
"""

import argparse
import os
import tempfile
import time

from medrobust.data import open_source, resolve_data_path
from medrobust.data.images import load_images
from medrobust.data.sources import fingerprint


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None)
    parser.add_argument("--sizes", default="64,128,224")
    args = parser.parse_args()
    t = time.perf_counter()
    source = open_source(resolve_data_path(args.data))
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    digest = fingerprint(source)
    fp_s = time.perf_counter() - t
    n = len(source.records)
    print(f"{n} images from {source.path}; {os.cpu_count()} cores; "
          f"reading metadata {read_s:.2f} s, fingerprint (hash of every file) {fp_s:.2f} s\n")
    print("| size | decode + resize + cache (s) | images/s | cache file (MB) | load from cache (s) |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            _, path, cached = load_images(source, digest, size, cache, progress=False)
            cold = time.perf_counter() - t
            assert not cached
            t = time.perf_counter()
            _, _, cached = load_images(source, digest, size, cache, progress=False)
            warm = time.perf_counter() - t
            assert cached
            mb = path.stat().st_size / 1e6
        print(f"| {size} | {cold:.1f} | {n / cold:.0f} | {mb:.0f} | {warm:.2f} |", flush=True)


if __name__ == "__main__":
    main()
