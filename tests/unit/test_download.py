"""DermaMNIST download and checksum check, against a server on 127.0.0.1 started by the test."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from medrobust.config import DataConfig
from medrobust.data import download, load_dataset


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www over HTTP on 127.0.0.1; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _small_dermamnist(path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 14), ("val", 7), ("test", 7)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 7).reshape(-1, 1)
    np.savez(path, **arrays)
    return download.md5sum(path)


def test_fetch_verifies_checksum(server, tmp_path):
    www, base = server
    md5 = _small_dermamnist(www / "dermamnist.npz")
    dest = tmp_path / "cache" / "dermamnist.npz"
    assert download.fetch(f"{base}/dermamnist.npz", dest, md5, progress=False) == dest
    assert download.md5sum(dest) == md5


def test_wrong_checksum_leaves_nothing_behind(server, tmp_path):
    www, base = server
    _small_dermamnist(www / "dermamnist.npz")
    dest = tmp_path / "cache" / "dermamnist.npz"
    with pytest.raises(download.DownloadError, match="does not match the published 0{32}"):
        download.fetch(f"{base}/dermamnist.npz", dest, "0" * 32, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_file_on_server_is_an_error(server, tmp_path):
    _, base = server
    with pytest.raises(download.DownloadError, match="404"):
        download.fetch(f"{base}/nothere.npz", tmp_path / "x.npz", "0" * 32, progress=False)


def test_no_data_given_downloads_dermamnist_from_mirror(server, tmp_path, monkeypatch):
    www, base = server
    md5 = _small_dermamnist(www / "dermamnist.npz")
    monkeypatch.setattr(download, "DERMAMNIST", {28: ("dermamnist.npz", md5)})
    monkeypatch.delenv("MEDROBUST_DATA", raising=False)
    monkeypatch.setenv("MEDROBUST_MIRROR", base)
    data = load_dataset(DataConfig(path=None, image_size=28, cache_dir=str(tmp_path / "cache")), progress=False)
    assert data.layout == "medmnist"
    assert len(data.y["train"]) == 14
    assert (tmp_path / "cache" / "dermamnist.npz").exists()


def test_offline_error_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDROBUST_DATA", raising=False)
    # A port nothing listens on: the connection is refused at once, as offline.
    monkeypatch.setenv("MEDROBUST_MIRROR", "http://127.0.0.1:9")
    with pytest.raises(download.DownloadError, match="MEDROBUST_DATA"):
        load_dataset(DataConfig(path=None, cache_dir=str(tmp_path / "cache")), progress=False)
