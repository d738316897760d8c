"""Pictures without a plotting library: draw once on a Canvas, save as SVG or PNG.

A Canvas records shapes (rectangles, heatmap cells, lines, polylines, circles,
text) in user units. `to_svg()` writes them as SVG elements; `to_png()`
rasterises them itself (a numpy array of RGB pixels, zlib + struct for the
file) with the hand-drawn bitmap font of font.py. Both come from the same list of shapes, so
the two files show the same picture.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.inspect import font

CHAR_WIDTH = 0.6  # advance of one monospace character, in units of the font size
FONT_FAMILY = "DejaVu Sans Mono, Menlo, Consolas, monospace"
FORMATS = ("svg", "png")


def text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_WIDTH


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


@dataclass
class _Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    stroke: str | None = None


@dataclass
class _Line:
    points: list[tuple[float, float]]
    stroke: str
    width: float = 1.0
    dashed: bool = False


@dataclass
class _Circle:
    cx: float
    cy: float
    r: float
    fill: str


@dataclass
class _Cells:
    """A grid of coloured cells (a heatmap body): an (n_rows, n_cols, 3) uint8 RGB array."""

    x: float
    y: float
    cell_w: float
    cell_h: float
    rgb: np.ndarray


@dataclass
class _Text:
    x: float
    y: float  # baseline
    text: str
    size: float
    color: str
    anchor: str  # start | middle | end
    rotate: int  # 0 or -90 (reads bottom to top)
    bold: bool


class Canvas:
    def __init__(self, width: float, height: float, background: str = "#ffffff") -> None:
        self.width, self.height, self.background = width, height, background
        self.items: list[object] = []

    # -- shapes (all coordinates in user units, y down) --
    def rect(self, x: float, y: float, w: float, h: float, fill: str, stroke: str | None = None) -> None:
        self.items.append(_Rect(x, y, w, h, fill, stroke))

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#000000",
             width: float = 1.0, dashed: bool = False) -> None:
        self.items.append(_Line([(x1, y1), (x2, y2)], stroke, width, dashed))

    def polyline(self, points: list[tuple[float, float]], stroke: str, width: float = 1.5) -> None:
        self.items.append(_Line(list(points), stroke, width))

    def circle(self, cx: float, cy: float, r: float, fill: str) -> None:
        self.items.append(_Circle(cx, cy, r, fill))

    def cells(self, x: float, y: float, cell_w: float, cell_h: float, rgb: np.ndarray) -> None:
        """A heatmap body: rgb[i, j] (uint8 red, green, blue) fills the cell in row i, column j."""
        self.items.append(_Cells(x, y, cell_w, cell_h, np.asarray(rgb, dtype=np.uint8)))

    def text(self, x: float, y: float, text: str, size: float = 12, color: str = "#222222",
             anchor: str = "start", rotate: int = 0, bold: bool = False) -> None:
        self.items.append(_Text(x, y, text, size, color, anchor, rotate, bold))

    # -- output --
    def save(self, path: Path | str) -> Path:
        path = Path(path)
        kind = path.suffix.lower().lstrip(".")
        if kind not in FORMATS:
            raise MlxgptError(f"--save {path}: pictures are .svg or .png")
        try:
            if path.parent != Path(""):
                path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "svg":
                path.write_text(self.to_svg(), encoding="utf-8")
            else:
                path.write_bytes(self.to_png())
        except OSError as exc:
            raise MlxgptError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path

    def to_svg(self) -> str:
        w, h = self.width, self.height
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}" height="{h:g}" viewBox="0 0 {w:g} {h:g}" '
               f'font-family="{FONT_FAMILY}">',
               f'<rect x="0" y="0" width="{w:g}" height="{h:g}" fill="{self.background}"/>']
        for item in self.items:
            if isinstance(item, _Rect):
                stroke = f' stroke="{item.stroke}" stroke-width="0.5"' if item.stroke else ""
                out.append(f'<rect x="{item.x:.2f}" y="{item.y:.2f}" width="{item.w:.2f}" height="{item.h:.2f}" '
                           f'fill="{item.fill}"{stroke}/>')
            elif isinstance(item, _Line):
                pts = " ".join(f"{x:.2f},{y:.2f}" for x, y in item.points)
                dash = ' stroke-dasharray="3,3"' if item.dashed else ""
                out.append(f'<polyline points="{pts}" fill="none" stroke="{item.stroke}" '
                           f'stroke-width="{item.width:g}" stroke-linejoin="round"{dash}/>')
            elif isinstance(item, _Cells):
                out.append(_svg_cells(item))
            elif isinstance(item, _Circle):
                out.append(f'<circle cx="{item.cx:.2f}" cy="{item.cy:.2f}" r="{item.r:g}" fill="{item.fill}"/>')
            elif isinstance(item, _Text):
                anchor = {"start": "start", "middle": "middle", "end": "end"}[item.anchor]
                rotate = f' transform="rotate({item.rotate} {item.x:.2f} {item.y:.2f})"' if item.rotate else ""
                weight = ' font-weight="bold"' if item.bold else ""
                out.append(f'<text x="{item.x:.2f}" y="{item.y:.2f}" font-size="{item.size:g}" fill="{item.color}" '
                           f'text-anchor="{anchor}" xml:space="preserve"{weight}{rotate}>{escape(item.text)}</text>')
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def to_png(self, scale: int | None = None) -> bytes:
        """Three pixels per unit (crisp text), fewer for very large pictures."""
        if scale is None:
            scale = max(1, min(3, int(4800 // max(self.width, self.height, 1))))
        return _Raster(self, scale).png()


class _Raster:
    """Paints a Canvas into RGB pixels (a numpy array), `scale` pixels per user unit."""

    def __init__(self, canvas: Canvas, scale: int) -> None:
        self.s = scale
        self.w = max(1, int(round(canvas.width * scale)))
        self.h = max(1, int(round(canvas.height * scale)))
        self.buf = np.empty((self.h, self.w, 3), dtype=np.uint8)
        self.buf[:, :] = _rgb(canvas.background)
        for item in canvas.items:
            if isinstance(item, _Rect):
                self._rect(item)
            elif isinstance(item, _Line):
                self._line(item)
            elif isinstance(item, _Circle):
                self._circle(item)
            elif isinstance(item, _Cells):
                self._cells(item)
            elif isinstance(item, _Text):
                self._text(item)

    def fill(self, x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int]) -> None:
        """Fill pixels [x0, x1) x [y0, y1), clipped to the image."""
        x0, x1 = max(0, x0), min(self.w, x1)
        y0, y1 = max(0, y0), min(self.h, y1)
        if x0 < x1 and y0 < y1:
            self.buf[y0:y1, x0:x1] = rgb

    def _px(self, v: float) -> int:
        return int(round(v * self.s))

    def _rect(self, r: _Rect) -> None:
        x0, y0, x1, y1 = self._px(r.x), self._px(r.y), self._px(r.x + r.w), self._px(r.y + r.h)
        if r.fill != "none":
            self.fill(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1), _rgb(r.fill))
        if r.stroke:
            c = _rgb(r.stroke)
            self.fill(x0, y0, x1, y0 + 1, c)
            self.fill(x0, y1 - 1, x1, y1, c)
            self.fill(x0, y0, x0 + 1, y1, c)
            self.fill(x1 - 1, y0, x1, y1, c)

    def _cells(self, c: _Cells) -> None:
        """Each cell's colour spread over its pixel block, with one fancy-indexing copy."""
        n_rows, n_cols = c.rgb.shape[:2]
        xs = np.round((c.x + np.arange(n_cols + 1) * c.cell_w) * self.s).astype(int)
        ys = np.round((c.y + np.arange(n_rows + 1) * c.cell_h) * self.s).astype(int)
        x0, x1 = max(0, xs[0]), min(self.w, xs[-1])
        y0, y1 = max(0, ys[0]), min(self.h, ys[-1])
        if x0 >= x1 or y0 >= y1:
            return
        col_of = np.searchsorted(xs, np.arange(x0, x1), side="right") - 1  # cell column of each pixel column
        row_of = np.searchsorted(ys, np.arange(y0, y1), side="right") - 1
        self.buf[y0:y1, x0:x1] = c.rgb[np.clip(row_of, 0, n_rows - 1)][:, np.clip(col_of, 0, n_cols - 1)]

    def _line(self, line: _Line) -> None:
        rgb = _rgb(line.stroke)
        t = max(1, int(round(line.width * self.s)))
        off = t // 2
        drawn = 0
        for (xa, ya), (xb, yb) in zip(line.points, line.points[1:]):
            x0, y0, x1, y1 = self._px(xa), self._px(ya), self._px(xb), self._px(yb)
            steps = max(abs(x1 - x0), abs(y1 - y0), 1)
            for i in range(steps + 1):
                drawn += 1
                if line.dashed and (drawn // (3 * self.s)) % 2:
                    continue
                x = x0 + (x1 - x0) * i // steps
                y = y0 + (y1 - y0) * i // steps
                self.fill(x - off, y - off, x - off + t, y - off + t, rgb)

    def _circle(self, c: _Circle) -> None:
        rgb = _rgb(c.fill)
        cx, cy, r = c.cx * self.s, c.cy * self.s, c.r * self.s
        for y in range(int(cy - r), int(cy + r) + 1):
            dy = y + 0.5 - cy
            if dy * dy > r * r:
                continue
            dx = (r * r - dy * dy) ** 0.5
            self.fill(int(round(cx - dx)), y, int(round(cx + dx)), y + 1, rgb)

    def _text(self, t: _Text) -> None:
        rgb = _rgb(t.color)
        advance = t.size * CHAR_WIDTH * self.s  # pixels per character, as in the SVG
        m = max(1, int(advance // (font.WIDTH + 1)))  # pixels per font dot, leaving a gap between letters
        width = advance * len(t.text)
        u0 = {"start": 0.0, "middle": -width / 2, "end": -width}[t.anchor]
        x, y = t.x * self.s, t.y * self.s
        pad = (advance - font.WIDTH * m) / 2
        for i, char in enumerate(t.text):
            rows = font.glyph(char)
            ustart = u0 + i * advance + pad
            for r, cols in enumerate(rows):
                v = (r - font.ASCENT) * m
                for c in cols:
                    u = ustart + c * m
                    for bold in ((0, m // 2) if t.bold else (0,)):
                        if t.rotate == -90:  # local (u, v) -> screen (x + v, y - u)
                            px, py = int(round(x + v)), int(round(y - u - m - bold))
                        else:
                            px, py = int(round(x + u + bold)), int(round(y + v))
                        self.fill(px, py, px + m, py + m, rgb)

    def png(self) -> bytes:
        return encode_png(self.buf)


def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG file from an (height, width, 3) uint8 array:
    signature, IHDR, one zlib-compressed IDAT (filter byte 0 before every row), IEND."""
    height, width = rgb.shape[:2]
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rgb.reshape(height, width * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


SVG_MAX_RECTS = 4096  # bigger heatmaps go into the SVG as one embedded image, one pixel per cell


def _svg_cells(c: _Cells) -> str:
    n_rows, n_cols = c.rgb.shape[:2]
    if n_rows * n_cols <= SVG_MAX_RECTS:
        return "\n".join(f'<rect x="{c.x + j * c.cell_w:.2f}" y="{c.y + i * c.cell_h:.2f}" width="{c.cell_w:.2f}" '
                         f'height="{c.cell_h:.2f}" fill="#{r:02x}{g:02x}{b:02x}"/>'
                         for i in range(n_rows) for j, (r, g, b) in enumerate(c.rgb[i].tolist()))
    data = base64.b64encode(encode_png(c.rgb)).decode("ascii")
    return (f'<image x="{c.x:.2f}" y="{c.y:.2f}" width="{n_cols * c.cell_w:.2f}" height="{n_rows * c.cell_h:.2f}" '
            f'preserveAspectRatio="none" image-rendering="pixelated" style="image-rendering:pixelated" '
            f'href="data:image/png;base64,{data}"/>')


# ---------------------------------------------------------------- colours

# viridis, sampled at 9 points (perceptually uniform, readable in grey and by most colour-blind readers)
VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
# ColorBrewer RdBu reversed: blue = negative, white = 0, red = positive
DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"]
# categorical (Tableau 10)
CATEGORICAL = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
               "#9c755f", "#bab0ac"]
MASKED = "#e4e4e4"  # cells the causal mask forbids


def ramp(stops: list[str], t: float) -> str:
    """Colour at t in [0, 1] along a list of colour stops."""
    t = 0.0 if t != t else min(1.0, max(0.0, t))  # NaN -> 0
    pos = t * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    f = pos - i
    a, b = _rgb(stops[i]), _rgb(stops[i + 1])
    return "#" + "".join(f"{int(round(x + (y - x) * f)):02x}" for x, y in zip(a, b))


def ramp_rgb(stops: list[str], t: np.ndarray) -> np.ndarray:
    """`ramp` for a whole array at once: (...) values in [0, 1] -> (..., 3) uint8 colours."""
    t = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float64)), 0.0, 1.0)
    colours = np.array([_rgb(c) for c in stops], dtype=np.float64)
    pos = t * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return np.round(colours[i] + (colours[i + 1] - colours[i]) * f).astype(np.uint8)


def readable_on(color: str) -> str:
    """Black or white text, whichever reads better on this background."""
    r, g, b = _rgb(color)
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"
