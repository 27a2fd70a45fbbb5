"""The names of the files the insight commands write per input image."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path


def output_stems(paths: list[Path]) -> list[str]:
    """One distinct name per image for OUT/<name>-<what>.png: the file's stem, unless another input has the
    same stem; then its path from the inputs' common folder (cat/001.png, dog/001.png -> cat_001, dog_001),
    with its extension if that is still not unique (a.png, a.jpg -> a.png, a.jpg)."""
    paths = [Path(p).absolute() for p in paths]
    stems = [p.stem for p in paths]
    repeated = {stem for stem, count in Counter(stems).items() if count > 1}
    if not repeated:
        return stems
    root = Path(os.path.commonpath([p.parent for p in paths]))
    relative = [p.relative_to(root) for p in paths]
    longer = ["_".join(r.with_suffix("").parts) for r in relative]
    clash = {name for name, count in Counter(longer).items() if count > 1}
    return [stem if stem not in repeated else "_".join(r.parts) if name in clash else name
            for stem, name, r in zip(stems, longer, relative)]
