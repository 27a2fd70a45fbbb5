"""The one decoder: large images are reduced before any float work, small ones decode exactly as before, EXIF
rotation is applied everywhere (Grad-CAM's pictures included)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from convlab.data import decode as decoding
from convlab.data.decode import load_image


def reference(path, channels, size):
    """The decoding before early reduction: the whole image, rotated, converted, then one antialiased resize."""
    with Image.open(path) as image:
        return decoding.fit(ImageOps.exif_transpose(image), channels, size)


def as_before(path, channels, size):
    """What load_image gave for a file before the early reduction: the image fully decoded and rotated, then
    converted and resized (the same on the old code and the new one, for an image this small)."""
    with Image.open(path) as image:
        return load_image(ImageOps.exif_transpose(image), channels, size)


def textured(width, height, mode="RGB"):
    """A smooth picture with detail at several scales (JPEG keeps it small, a resize has work to do)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [127 + 120 * np.sin(x / 7 + k) * np.cos(y / 11 - k) for k in range(3)]
    pixels = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == "RGBA":
        image.putalpha(Image.fromarray((x * 255 / width).astype(np.uint8)))
    return image.convert(mode)


@pytest.mark.parametrize("mode, suffix, size", [
    ("RGB", ".png", (100, 60)), ("RGBA", ".png", (120, 90)), ("LA", ".png", (64, 64)), ("L", ".jpg", (127, 127)),
    ("RGB", ".jpg", (120, 127)), ("P", ".gif", (90, 100)), ("I;16", ".png", (50, 40))])
def test_an_image_up_to_the_margin_decodes_as_before(tmp_path, mode, suffix, size):
    """Images up to WORKING_MARGIN times the target (here 32 x 32, so below 128 px) are not reduced early:
    training pixels of ordinary image folders stay bit-identical."""
    path = tmp_path / f"image{suffix}"
    image = textured(*size, "RGBA" if mode in ("RGBA", "LA") else "RGB")
    (image.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
     ).save(path)
    for channels in (1, 3):
        np.testing.assert_array_equal(load_image(path, channels, 32), as_before(path, channels, 32))
        np.testing.assert_array_equal(load_image(path, channels, 32), reference(path, channels, 32))


def test_a_large_transparent_png_is_composited_after_the_reduction(tmp_path, monkeypatch):
    """Alpha over white runs in float32: at the working size, never at the upload's full size."""
    path = tmp_path / "large.png"
    textured(1600, 1200, "RGBA").save(path)
    composited = []
    real = decoding._over_white
    monkeypatch.setattr(decoding, "_over_white", lambda image, base: composited.append(image.size) or real(image, base))
    out = load_image(path, 3, (24, 32))
    assert composited and max(composited) <= (32 * 4 * 2, 24 * 4 * 2), composited  # reduced 12x to 133 x 100
    assert np.abs(out.astype(int) - reference(path, 3, (24, 32))).mean() < 2.0


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    """JPEG's DCT scaling decodes a 12-Mpx photo straight to 1/8 of it for a small model: close to the full
    decode's result, but far fewer pixels ever exist."""
    path = tmp_path / "photo.jpg"
    textured(4000, 3000).save(path, quality=90)
    with decoding.open_image(path) as opened:
        working = decoding.decode(opened, decoding.working_size((32, 32)))
        assert opened.size == (500, 375)  # the DCT decoded 1/8 of the width and height
    assert working.size == (250, 188)  # then a 2x box reduction: still >= 128 x 128
    assert np.abs(load_image(path, 3, 32).astype(int) - reference(path, 3, 32)).mean() < 3.0


def test_exif_rotation_is_applied_to_files_and_bytes(tmp_path):
    upright = textured(40, 80)  # taller than wide, as shown
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned on its side; shown rotated 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)
    expected = decoding.fit(upright, 3, (16, 8))
    assert np.abs(load_image(path, 3, (16, 8)).astype(int) - expected).mean() < 6
    np.testing.assert_array_equal(load_image(path.read_bytes(), 3, (16, 8)), load_image(path, 3, (16, 8)))


def test_gradcam_shows_the_image_rotated_as_the_model_saw_it(tmp_path, digits_run, monkeypatch):
    """gradcam used to draw the file as stored while the model got the EXIF-rotated image."""
    from convlab.insight import gradcam

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    textured(20, 50).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes())  # stored 50 x 20
    drawn = []
    monkeypatch.setattr(gradcam, "save_cam_figure", lambda original, heatmap, title, out: drawn.append(original))
    gradcam.gradcam_files(digits_run, [path], tmp_path / "out")
    assert drawn[0].shape == (50, 20)  # (H, W) as shown, gray as the model takes it


def test_a_huge_image_is_shown_at_display_size():
    """Overlays are drawn at most DISPLAY_MAX pixels on the long side, whatever size the image came in."""
    from convlab.evaluate.pictures import DISPLAY_MAX
    from convlab.insight.gradcam import overlay

    drawn = overlay(np.zeros((3000, 2000, 3), np.uint8), np.ones((8, 8), np.float32))
    assert drawn.shape == (DISPLAY_MAX, round(DISPLAY_MAX * 2 / 3), 3)


def test_the_header_is_checked_before_decoding():
    buffer = io.BytesIO()
    Image.new("1", (3000, 2000)).save(buffer, "PNG")
    with pytest.raises(decoding.TooManyPixels, match="3000 x 2000 = 6,000,000 pixels is over the cap of 1,000,000"):
        decoding.open_image(buffer.getvalue(), max_pixels=1_000_000)
    tiff = io.BytesIO()
    Image.new("L", (4, 4)).save(tiff, "TIFF")
    with pytest.raises(decoding.UnknownFormat):
        decoding.open_image(tiff.getvalue(), formats=("PNG", "JPEG"))
