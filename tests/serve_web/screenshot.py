"""The web app's pictures in docs/serving.md:

    python tests/serve_web/screenshot.py docs/images/serve-predict.png [docs/images/serve-runs.png]

Trains the small digits run, serves it with the test app on 127.0.0.1, uploads four test digits (enlarged so the
overlay is visible), turns the explain overlay on (Grad-CAM, the default method) and takes the page with headless
Chromium; with a second path, also the Runs page's most confident mistakes explained by integrated gradients.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for browser.py when run as a script
from browser import BROWSER_ARGS, chromium_path  # noqa: E402
from webapp_server import live_server, make_app, png_bytes, served  # noqa: E402


def main(out: Path, runs_out: Path | None = None) -> None:
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
            print(f"wrote {out}")
            if runs_out is not None:
                page.goto(url + "/#runs", wait_until="load")
                page.wait_for_selector("#runs-mistakes figure")
                page.select_option("#runs-method", "ig")
                page.wait_for_function("() => document.querySelector('#runs-method-status').textContent"
                                       ".startsWith('ig:')")
                top = page.locator("#runs-body h2", has_text="Most confident mistakes").bounding_box()
                grid = page.locator("#runs-mistakes").bounding_box()  # page coordinates: nothing is scrolled
                page.screenshot(path=str(runs_out), full_page=True, clip={
                    "x": 0, "y": top["y"] - 8, "width": 1000, "height": grid["y"] + grid["height"] - top["y"] + 16})
                print(f"wrote {runs_out}")
            browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
