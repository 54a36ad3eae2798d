import importlib
import logging

import numpy as np
import pytest
from PIL import Image

from medrobust.data import open_source
from medrobust.data.images import cache_key, decode_files, decode_image, load_images
from medrobust.data.sources import fingerprint
from medrobust.errors import DataError


def test_decode_is_rgb_uint8_resized(small_ham):
    files = list(open_source(small_ham).records["file"])
    image = decode_image(files[0], 24)
    assert image.shape == (24, 24, 3) and image.dtype == np.uint8
    assert 0 < image.mean() < 255


def test_threaded_decode_keeps_order(small_ham):
    files = list(open_source(small_ham).records["file"])
    both = decode_files(files, 16, workers=2, progress=False)
    one_by_one = np.stack([decode_image(f, 16) for f in files])
    np.testing.assert_array_equal(both, one_by_one)


def test_cache_is_keyed_by_fingerprint_and_size(small_ham, tmp_path):
    source = open_source(small_ham)
    digest = fingerprint(source)
    first, path, cached = load_images(source, digest, 16, tmp_path, progress=False)
    assert not cached and path.exists()
    again, path2, cached2 = load_images(source, digest, 16, tmp_path, progress=False)
    assert cached2 and path2 == path
    np.testing.assert_array_equal(first, again)
    other, path3, cached3 = load_images(source, digest, 20, tmp_path, progress=False)
    assert not cached3 and path3 != path and other.shape[1] == 20
    assert cache_key(digest, 16) != cache_key("0" * 64, 16)


def test_fingerprint_changes_with_content(small_ham):
    source = open_source(small_ham)
    before = fingerprint(source)
    image = small_ham / "images" / f"{source.records['image_id'][0]}.jpg"
    image.write_bytes(image.read_bytes() + b"\0")
    assert fingerprint(open_source(small_ham)) != before


@pytest.mark.parametrize("damage", ["zeroed", "pixels zeroed", "truncated", "empty", "digest missing"])
def test_a_damaged_cache_is_deleted_and_decoded_again(small_ham, tmp_path, caplog, damage):
    source = open_source(small_ham)
    digest = fingerprint(source)
    first, path, _ = load_images(source, digest, 16, tmp_path, progress=False)
    raw = path.read_bytes()
    header = len(raw) - first.nbytes
    if damage == "zeroed":
        path.write_bytes(bytes(len(raw)))  # the whole file, same size
    elif damage == "pixels zeroed":
        path.write_bytes(raw[:header] + bytes(first.nbytes))  # a valid array of black images
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.with_suffix(".sha256").unlink()
    with caplog.at_level(logging.WARNING, logger="medrobust"):
        again, path2, cached = load_images(source, digest, 16, tmp_path, progress=False)
    assert not cached and path2 == path
    np.testing.assert_array_equal(again, first)  # decoded again, not read from the damaged file
    assert f"image cache {path} is unusable" in caplog.text
    assert load_images(source, digest, 16, tmp_path, progress=False)[2]  # and cached again, intact


@pytest.mark.parametrize("decoder", ["PIL", "simplejpeg"])
def test_cache_key_holds_the_decoder_version(monkeypatch, decoder):
    module = importlib.import_module(decoder)
    before = cache_key("0" * 64, 16)
    monkeypatch.setattr(module, "__version__", "0.0.1")
    assert cache_key("0" * 64, 16) != before


@pytest.mark.parametrize("kind", ["ham10000", "progressive", "grayscale", "cmyk", "png"])
def test_an_image_decodes_as_pillow_decodes_it(small_ham, tmp_path, kind):
    # a JPEG's pixels come from the strict check's decode, not from a second one by Pillow
    path = next((small_ham / "images").glob("*.jpg"))
    if kind != "ham10000":  # the same picture written again as `kind`
        with Image.open(path) as im:
            path = tmp_path / f"image.{'png' if kind == 'png' else 'jpg'}"
            im.convert({"grayscale": "L", "cmyk": "CMYK"}.get(kind, "RGB")).save(path, progressive=kind == "progressive")
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB").resize((24, 24), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(path, 24), expected)


def test_a_jpeg_with_bytes_overwritten_mid_file_stops_the_run(small_ham):
    path = list(open_source(small_ham).records["file"])[0]
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 200] = bytes(200)  # a zeroed block, as a bad disk or transfer leaves
    open(path, "wb").write(bytes(data))
    with pytest.raises(DataError, match=f"{path}: cannot decode image: corrupt JPEG data"):
        decode_image(path, 16)
    with pytest.raises(DataError, match="1 unreadable image"):
        decode_files([path], 16, progress=False)
