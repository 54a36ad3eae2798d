"""How many JPEGs with bytes overwritten mid-file the decoder check catches (README, "What
happens when things go wrong"): 200 random bytes written over the middle of each of the first
N HAM10000 images, 4 seeds each, checked as the loader checks them.

    MEDROBUST_DATA=../shared/data/ham10000 python experiments/jpeg_corruption.py [N]
"""

import os
import sys
from pathlib import Path

import numpy as np

from medrobust.data.images import check_jpeg
from medrobust.errors import DataError


def main(n=50, seeds=4, length=200):
    files = sorted((Path(os.environ["MEDROBUST_DATA"]) / "images").glob("*.jpg"))[:n]
    caught = total = 0
    for path in files:
        data = path.read_bytes()
        for seed in range(seeds):
            damaged = bytearray(data)
            middle = len(damaged) // 2
            damaged[middle:middle + length] = np.random.default_rng(seed).integers(0, 256, length, np.uint8).tobytes()
            total += 1
            try:
                check_jpeg(bytes(damaged), path)
            except DataError:
                caught += 1
    print(f"{caught} of {total} damaged JPEGs caught ({len(files)} images x {seeds} overwrites of {length} bytes)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
