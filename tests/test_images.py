import numpy as np

from medrobust.data import open_source
from medrobust.data.images import cache_key, decode_files, decode_image, load_images
from medrobust.data.sources import fingerprint


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
