"""The Predict page's picture in docs/serving.md: python tests/serve_web/screenshot.py docs/images/serve-predict.png

Trains the small digits run, serves it with the test app on 127.0.0.1, uploads four test digits (enlarged so the
overlay is visible), turns the explain overlay on (Grad-CAM, the default method) and takes the page with headless Chromium.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

from test_webapp_browser import BROWSER_ARGS, chromium_path
from webapp_server import live_server, make_app, png_bytes, served


def main(out: Path) -> None:
    from convlab import train

    with tempfile.TemporaryDirectory() as scratch:
        run = train(data="digits", model="tiny-cnn", epochs=10, threads=1, out=str(Path(scratch) / "digits"),
                    quiet=True)
        test = run.test_data()
        paths = []
        for digit in (3, 5, 8, 9):
            image = test.images[np.flatnonzero(test.labels == run.classes.index(str(digit)))[0], 0]
            paths.append(Path(scratch) / f"digit-{digit}.png")
            paths[-1].write_bytes(png_bytes(np.kron(image, np.ones((8, 8), np.uint8))))  # 8x8 -> 64x64
        with live_server(make_app({"digits": served("digits", run.path)})) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 440})
            page.goto(url + "/", wait_until="load")
            page.wait_for_selector("#predict-model option[value=digits]", state="attached")
            page.set_input_files("#predict-files", [str(path) for path in paths])
            page.wait_for_selector(".prediction .bar-row")
            page.check("#predict-gradcam")
            page.wait_for_function("() => [...document.querySelectorAll('img.gradcam')].every(i => i.naturalWidth)")
            page.screenshot(path=str(out))
            browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
