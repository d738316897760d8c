"""Helpers for the tests of saved pictures: a file must decode into a real picture, not only exist."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

SVG = "{http://www.w3.org/2000/svg}"


def check_picture_file(path: Path, *texts: str, min_width: int = 600, min_height: int = 300) -> None:
    """A PNG decodes to a picture of at least min_width x min_height pixels with ink on it
    and many colours; an SVG parses as XML and holds `texts` as text; a PDF has its header."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".png":
        from matplotlib.image import imread

        rgb = imread(path)[..., :3]  # (height, width, 3) floats in [0, 1]
        height, width = rgb.shape[:2]
        assert width >= min_width and height >= min_height, (width, height)
        ink = (rgb < 0.9).any(axis=-1).mean()  # the share of pixels that are not (nearly) white
        assert 0.01 < ink < 0.95, ink
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # lines, text and colour maps, not a flat fill
    elif path.suffix == ".svg":
        root = ET.fromstring(data)
        assert root.tag == SVG + "svg"
        shown = " ".join(t.text or "" for t in root.iter(SVG + "text"))
        for text in texts:
            assert text in shown, f"{text!r} not in the SVG's text"
        assert len(list(root.iter(SVG + "path"))) >= 5  # axes, bars, lines
    else:
        assert path.suffix == ".pdf" and data.startswith(b"%PDF-") and len(data) > 2000


def figure_texts(fig) -> list[str]:
    """Every piece of text in a matplotlib Figure (titles, labels, ticks, annotations), subfigures included."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]
