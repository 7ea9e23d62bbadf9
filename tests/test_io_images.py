import numpy as np
import pytest
import tifffile
from PIL import Image

from zeusseg.errors import InputError
from zeusseg.io import list_images, normalise_intensity, read_image


def test_uint8_png_grey(tmp_path, disks_image):
    p = tmp_path / "a.png"
    Image.fromarray(disks_image).save(p)
    img = read_image(p)
    assert img.data.dtype == np.float32 and img.data.shape == (128, 128)
    assert img.source_dtype == "uint8" and img.name == "a"
    assert np.allclose(img.data * 255, disks_image, atol=1e-3)


def test_uint16_percentile_scaling_ignores_hot_pixel(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(1000, 3000, (64, 64)).astype(np.uint16)
    raw[0, 0] = 65535  # one hot pixel
    p = tmp_path / "b.tif"
    tifffile.imwrite(p, raw)
    img = read_image(p)
    assert img.source_dtype == "uint16"
    assert img.data.min() == 0.0 and img.data.max() == 1.0
    # the bulk keeps its spread: the hot pixel did not flatten everything to black
    assert 0.3 < float(np.median(img.data)) < 0.7


def test_rgb_and_rgba(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert read_image(tmp_path / "rgb.png").data.shape == (8, 8, 3)
    rgba = np.full((8, 8, 4), 100, np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    assert img.data.shape == (8, 8)  # equal RGB collapsed to grey, alpha dropped
    assert np.allclose(img.data, 100 / 255)


def test_jpeg(tmp_path, disks_image):
    Image.fromarray(disks_image).save(tmp_path / "c.jpg", quality=95)
    assert read_image(tmp_path / "c.jpg").data.shape == (128, 128)


def test_float_nan_inf(tmp_path):
    raw = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    raw[0, 0] = np.nan
    raw[0, 1] = np.inf
    tifffile.imwrite(tmp_path / "f.tif", raw)
    data = read_image(tmp_path / "f.tif").data
    assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1


def test_constant_image():
    assert np.all(normalise_intensity(np.full((4, 4), 7, np.uint16)) == 0)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.png", b"", "empty"),
        ("text.png", b"hello, not an image", "not a readable image"),
        ("trunc.png", None, "truncated"),
    ],
)
def test_bad_files(tmp_path, disks_image, name, content, message):
    p = tmp_path / name
    if content is None:
        Image.fromarray(disks_image).save(p)
        p.write_bytes(p.read_bytes()[:200])
    else:
        p.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_image(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_multipage_tiff_rejected(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="multi-page"):
        read_image(p)


def test_5d_tiff_rejected(tmp_path):
    p = tmp_path / "5d.tif"
    tifffile.imwrite(p, np.zeros((2, 2, 2, 8, 8), np.uint8), imagej=True)
    with pytest.raises(InputError):
        read_image(p)


def test_truncated_tiff(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.zeros((64, 64), np.uint16))
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(InputError, match="t.tif"):
        read_image(p)


def test_list_images(tmp_path, disks_image):
    with pytest.raises(InputError, match="no such"):
        list_images(tmp_path / "missing")
    with pytest.raises(InputError, match="no image"):
        list_images(tmp_path)
    for n in ("b.png", "a.tif", "notes.txt", ".hidden.png"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.png"]
    with pytest.raises(InputError, match="not an image file"):
        list_images(tmp_path / "notes.txt")


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os
    import stat

    from zeusseg.io.atomic import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) & 0o044 == 0o044  # readable by others
