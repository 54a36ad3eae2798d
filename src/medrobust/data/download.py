"""Fetching DermaMNIST from its official record, checked against the published MD5.

The URLs and MD5 sums are those of the `medmnist` package's info.py (v3, Zenodo record
10519652); we copy them rather than depend on medmnist, which pulls in PyTorch. A mirror can
stand in for the record (`MEDROBUST_MIRROR`, same file names), as for a site behind a firewall.
"""

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ConfigError, DataError

RECORD_URL = "https://zenodo.org/records/10519652/files"
DERMAMNIST = {
    28: ("dermamnist.npz", "0744692d530f8e62ec473284d019b0c7"),
    64: ("dermamnist_64.npz", "b70a2f5635c6199aeaa28c31d7202e1f"),
    128: ("dermamnist_128.npz", "2defd784463fa5243564e855ed717de1"),
    224: ("dermamnist_224.npz", "8974907d8e169bef5f5b96bc506ae45d"),
}


class DownloadError(DataError):
    """A download failed or its checksum did not match."""


def md5sum(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path | str, md5: str, timeout: float = 60, progress: bool = True) -> Path:
    """Download `url` to `dest` unless a file with the right MD5 is already there.

    The file is written under a temporary name and moved into place only once its MD5 matches,
    so a broken or tampered download never sits at `dest`.
    """
    dest = Path(dest)
    if dest.exists() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress, file=sys.stderr) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        got = md5sum(tmp)
        if got != md5:
            raise DownloadError(f"{url}: MD5 {got} does not match the published {md5}; the file was discarded")
        shutil.move(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"could not download {url} ({e})") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def dermamnist(cache_dir: Path | str, size: int = 28, mirror: str | None = None) -> Path:
    """Path of the DermaMNIST .npz at `size` px in `cache_dir`, downloading it when needed."""
    if size not in DERMAMNIST:
        raise ConfigError(f"DermaMNIST comes at sizes {sorted(DERMAMNIST)}, not {size}")
    name, md5 = DERMAMNIST[size]
    base = (mirror or os.environ.get("MEDROBUST_MIRROR") or RECORD_URL).rstrip("/")
    try:
        return fetch(f"{base}/{name}?download=1", Path(cache_dir) / name, md5)
    except DownloadError as e:
        raise DownloadError(
            f"{e}. No data was given and DermaMNIST could not be fetched: pass --data PATH or set "
            "MEDROBUST_DATA to a HAM10000 folder, an ISIC 2018 Task 3 folder or a dermamnist*.npz "
            "(or MEDROBUST_MIRROR to a server holding the official files)"
        ) from e
