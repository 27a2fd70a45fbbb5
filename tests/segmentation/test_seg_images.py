"""Reading images at their native depth: 16-bit PNG and TIFF keep every value, 8-bit and colour images come back
as stored, EXIF rotation is applied, and a file that cannot be read is named."""
import numpy as np
import pytest
from PIL import Image

from convlab.data.decode import UnreadableImage
from convlab.segmentation.images import read_image

RAMP = np.array([[0, 1, 255, 256], [1000, 32768, 65534, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("suffix, mode, order", [(".png", "I;16", "<u2"), (".tif", "I;16", "<u2"),
                                                 (".tif", "I;16B", ">u2")])  # a big-endian TIFF too
def test_16_bit_gray_keeps_its_full_range(tmp_path, suffix, mode, order):
    path = tmp_path / f"scan{suffix}"
    Image.frombytes(mode, (4, 2), RAMP.astype(order).tobytes()).save(path)
    assert Image.open(path).mode == mode
    pixels, scale = read_image(path)
    assert pixels.dtype == np.uint16 and pixels.shape == (2, 4, 1) and scale == 65535
    np.testing.assert_array_equal(pixels[..., 0], RAMP)
    assert (pixels / scale).max() == 1.0


def test_a_32_bit_integer_tiff_within_16_bits_is_read_as_16_bit(tmp_path):
    Image.fromarray(RAMP.astype(np.int32)).save(tmp_path / "scan.tif")
    assert Image.open(tmp_path / "scan.tif").mode == "I"
    pixels, scale = read_image(tmp_path / "scan.tif")
    assert pixels.dtype == np.uint16 and scale == 65535
    np.testing.assert_array_equal(pixels[..., 0], RAMP)


def test_8_bit_gray_and_colour_come_back_as_stored(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "gray.png")
    pixels, scale = read_image(tmp_path / "gray.png")
    assert pixels.dtype == np.uint8 and scale == 255
    np.testing.assert_array_equal(pixels, gray[..., None])
    colour = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_image(tmp_path / "colour.png")[0], colour)


@pytest.mark.parametrize("mode", ["P", "RGBA", "CMYK", "LA"])
def test_other_modes_become_rgb_or_gray(tmp_path, mode):
    colour = np.random.default_rng(1).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    image = Image.fromarray(colour).convert(mode)
    image.save(tmp_path / ("a.tif" if mode == "CMYK" else "a.png"))
    pixels, scale = read_image(tmp_path / ("a.tif" if mode == "CMYK" else "a.png"))
    channels = 1 if mode == "LA" else 3
    want = np.asarray(image.convert("L" if channels == 1 else "RGB")).reshape(3, 4, channels)
    assert pixels.dtype == np.uint8 and scale == 255
    np.testing.assert_array_equal(pixels, want)


def test_the_exif_orientation_is_applied(tmp_path):
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(gray).save(tmp_path / "turned.png", exif=exif)
    pixels, _ = read_image(tmp_path / "turned.png")
    np.testing.assert_array_equal(pixels[..., 0], np.rot90(gray, -1))


def test_a_file_that_cannot_be_read_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    noise = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)  # noise: no tiny IDAT
    Image.fromarray(noise).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:200])
    Image.fromarray(np.full((2, 2), 0.5, np.float32)).save(tmp_path / "float.tif")
    for name in ("bad.png", "cut.png", "float.tif"):
        with pytest.raises(UnreadableImage) as err:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
