"""The pieces every run report shares: its style, embedded images, tables, the config and curves sections, and
writing the page (one self-contained HTML file: images as data URIs, no scripts, no network)."""
from __future__ import annotations

import html
from pathlib import Path

from ..errors import ConvlabError
from ..evaluate.pictures import curves_png, data_uri
from ..layout import CURVES, HISTORY

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .2em .7em; border: 1px solid #ddd; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .pixel { image-rendering: pixelated; }
.mistakes { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: 0; text-align: center; }
figcaption { font-size: .85em; } .low { background: #fde2e2; } .note { color: #666; font-size: .9em; }
"""


def img(png: bytes, alt: str, pixel: bool = False) -> str:
    cls = ' class="pixel"' if pixel else ""
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}"{cls}>'


def html_table(columns: list[str], rows: list[list[str]]) -> str:
    """A table of strings; every column but the first right-aligned."""
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for cells in rows:
        first, rest = cells[0], cells[1:]
        body.append(f"<tr><td>{html.escape(first)}</td>"
                    + "".join(f"<td class=num>{html.escape(cell)}</td>" for cell in rest) + "</tr>")
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


def config_section(run) -> str:
    """The settings as config.yaml holds them: a run trained from scratch has no finetune section."""
    rows = []
    for section, values in run.config.to_dict().items():
        if section == "finetune" and run.config.finetune.source is None:
            continue
        for key, value in values.items():
            rows.append(f"<tr><th>{section}.{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>")
    return "<h2>Config</h2><table>" + "".join(rows) + "</table>"


def curves_section(run) -> str:
    png = curves_png(run.path)
    if png is None:
        return f"<h2>Training curves</h2><p class=note>the run has no {CURVES} or {HISTORY}</p>"
    return "<h2>Training curves</h2>" + img(png, "training curves")


def write_page(out: Path, title: str, parts: list[str]) -> Path:
    """The page of `parts` at `out` (its folder created); a path that cannot be written is a one-line error."""
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        raise ConvlabError(f"cannot write the report {out} ({err.strerror}); pass --out with a writable path") from None
    return out
