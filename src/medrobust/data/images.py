"""Decode, resize and cache images as uint8 arrays.

The cache holds uint8 (a quarter of float32's size: 1.5 GB rather than 6 GB for HAM10000 at
224 px) and is keyed by the source fingerprint, every preprocessing setting and the decoder's
version, so a change of any can never return stale pixels. Beside each array lies the SHA-256
of its pixels; an array that does not load or does not match is deleted and decoded again.
Conversion to float32 in [0, 1] happens at the edge.
"""

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import simplejpeg
from PIL import Image

from .. import stopping
from ..console import progress as progress_bar
from .sources import DataError, Source, load_medmnist_arrays

log = logging.getLogger(__name__)

# Bumped whenever our decoding changes, so old caches are not reused (Pillow's and simplejpeg's
# versions are in the key too: another libjpeg build can give other pixels).
DECODE_VERSION = 2
RESAMPLE = "bilinear"
JPEG_SUFFIXES = (".jpg", ".jpeg")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDROBUST_CACHE") or Path.home() / ".cache" / "medrobust")


def check_jpeg(data: bytes, path: Path | str) -> np.ndarray:
    """A JPEG's pixels, uint8 (H, W, 3) RGB; DataError if libjpeg reports corrupt data in its
    bytes. Pillow decodes such a file without a word (libjpeg's "Corrupt JPEG data" is only a
    warning); simplejpeg's strict mode turns it into an error, so an image with bytes
    overwritten mid-file stops the run rather than training on garbage."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as e:
        raise DataError(f"{path}: cannot decode image: corrupt JPEG data ({e})") from e


def decode_image(path: Path | str, size: int) -> np.ndarray:
    """One image file as uint8 (size, size, 3): RGB, resized with antialiasing, aspect not kept."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e
    return decode_bytes(data, size, where=path, jpeg=Path(path).suffix.lower() in JPEG_SUFFIXES)


def decode_bytes(data: bytes, size: int, *, where: Path | str, jpeg: bool | None = None,
                 formats: Sequence[str] | None = None, max_pixels: int | None = None) -> np.ndarray:
    """An encoded image (JPEG, PNG, ... bytes) as uint8 (size, size, 3), exactly as decode_image
    decodes a file. jpeg: check it strictly as JPEG (None: when it starts as one). where: what
    the errors name. For bytes from a request: formats, the Pillow formats accepted (None: any);
    max_pixels, the largest image accepted, read from the header before anything is decoded."""
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise DataError(f"{where}: the image is {im.width} x {im.height} pixels; at most {max_pixels:,} are read")
            if jpeg or (jpeg is None and data[:3] == b"\xff\xd8\xff"):
                pixels = check_jpeg(data, where)
                # Pillow's decode, bit for bit (both bundle libjpeg-turbo; all 10,015 of HAM10000),
                # not made twice. Not for CMYK, where simplejpeg's RGB differs by 1, nor grayscale.
                if im.mode == "RGB":
                    im = Image.fromarray(pixels)
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except PIL.UnidentifiedImageError:
        kinds = f" ({', '.join(formats)} only)" if formats else ""
        raise DataError(f"{where}: cannot decode image (no image format Pillow reads{kinds})") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, OverflowError, NotImplementedError,
            Image.DecompressionBombError) as e:
        raise DataError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from e


def resize_array(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 with the same resampling as decode_image."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in images]
    )


def decode_files(files: Sequence[Path | str], size: int, workers: int | None = None,
                 progress: bool = True) -> np.ndarray:
    """Decode every file into one (N, size, size, 3) uint8 array, on `workers` threads.

    Pillow releases the GIL while it resizes (simplejpeg's strict decode holds it), so threads
    share the cores without the cost of starting processes next to a loaded TensorFlow. Every
    unreadable file is collected and reported together; none is skipped.
    """
    workers = workers or os.cpu_count() or 1
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    errors = []

    def work(i: int) -> None:
        try:
            out[i] = decode_image(files[i], size)
        except DataError as e:
            errors.append(str(e))

    bar = progress_bar(total=len(files), desc=f"decode {size}px", unit="img", enabled=progress)
    with ThreadPoolExecutor(workers) as pool:
        try:
            for _ in pool.map(work, range(len(files)), chunksize=64):
                stopping.checkpoint()  # decoding all of HAM10000 at 224 px takes a while
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # else leaving the block waits for every image
            raise
    bar.close()
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise DataError(f"{len(errors)} unreadable image(s): " + "; ".join(sorted(errors)[:5]) + more)
    return out


def cache_key(fingerprint: str, size: int) -> str:
    text = (f"{fingerprint}|size={size}|resample={RESAMPLE}|v={DECODE_VERSION}|pillow={PIL.__version__}"
            f"|simplejpeg={simplejpeg.__version__}")  # a JPEG's pixels are simplejpeg's (check_jpeg)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def pixels_digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array at `path` if it loads, has `shape` and matches the digest beside it;
    else None, with the files deleted and one line saying why."""
    digest_path = path.with_suffix(".sha256")
    if not path.exists():
        return None
    try:
        images = np.load(path, allow_pickle=False)
        if images.shape != shape or images.dtype != np.uint8:
            raise ValueError(f"holds {images.dtype} {images.shape}, expected uint8 {shape}")
        if not digest_path.exists():
            raise ValueError(f"its checksum file {digest_path.name} is missing")
        if pixels_digest(images) != digest_path.read_text().strip():
            raise ValueError("its pixels do not match their checksum")
        return images
    except (OSError, ValueError, EOFError) as e:
        log.warning("image cache %s is unusable (%s): deleted, decoding again", path, e)
        for stale in (path, digest_path):
            stale.unlink(missing_ok=True)
        return None


def _write_atomically(path, write):
    """write(file) into a temporary file of path's folder, then rename it to path, so a crash
    or a parallel run never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_images(source: Source, fingerprint: str, size: int, cache_dir: Path | str | None = None,
                progress: bool = True) -> tuple[np.ndarray, Path, bool]:
    """uint8 array (N, size, size, 3) aligned with source.records, from the cache when present.

    Returns (images, cache_path, from_cache).
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"images_{cache_key(fingerprint, size)}.npy"
    images = read_cache(path, (len(source.records), size, size, 3))
    if images is not None:
        return images, path, True
    if source.layout == "medmnist":
        arrays = load_medmnist_arrays(source.path)
        pools = {s: arrays[f"{s}_images"] for s in ("train", "val", "test")}
        positions = source.records["image_id"].str.rsplit("_", n=1).str[1].astype(int)
        images = np.stack([pools[s][i] for s, i in zip(source.records["split"], positions)])
        images = resize_array(images, size)
    else:
        images = decode_files(list(source.records["file"]), size, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The digest first: an array without its digest is never trusted.
    _write_atomically(path.with_suffix(".sha256"), lambda f: f.write(pixels_digest(images).encode()))
    _write_atomically(path, lambda f: np.save(f, images))
    return images, path, False
