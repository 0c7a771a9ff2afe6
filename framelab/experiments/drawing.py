"""A few drawing primitives and two ways to render them: SVG text and PNG.

The ladder and state diagrams lay themselves out once, as a Drawing in pixel
coordinates (y down); `to_svg()` writes it as a small self-contained SVG (no
fonts or scripts fetched, embeddable inline in HTML), `to_png()` draws the
same primitives with matplotlib for places that need a raster image. Linear
in the number of primitives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

Anchor = Literal["start", "middle", "end"]
FONT = "DejaVu Sans, Verdana, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, monospace"


@dataclass(frozen=True)
class Line:
    points: tuple[tuple[float, float], ...]
    color: str = "#333"
    width: float = 1.0
    dash: str | None = None  # SVG dash pattern, e.g. "4 3"
    arrow: bool = False  # an arrowhead at the last point
    opacity: float = 1.0


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    size: float = 12.0
    color: str = "#222"
    anchor: Anchor = "start"
    bold: bool = False
    mono: bool = False
    opacity: float = 1.0
    background: str | None = None  # a box behind the text, so it reads over lines


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str = "none"
    stroke: str = "#333"
    stroke_width: float = 1.0
    radius: float = 0.0
    opacity: float = 1.0


Shape = Line | Text | Rect


@dataclass
class Drawing:
    width: float
    height: float
    title: str = ""
    shapes: list[Shape] = field(default_factory=list)

    def add(self, *shapes: Shape) -> None:
        self.shapes.extend(shapes)


def text_width(text: str, size: float, mono: bool = False) -> float:
    """A width estimate for layout (no font metrics at hand): ~0.6 em per character."""
    return len(text) * size * (0.61 if mono else 0.56)


def _arrowhead(
    points: tuple[tuple[float, float], ...], size: float
) -> tuple[tuple[float, float], ...]:
    (x1, y1), (x2, y2) = points[-2], points[-1]
    dx, dy = x2 - x1, y2 - y1
    length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    ux, uy = dx / length, dy / length
    back_x, back_y = x2 - ux * size, y2 - uy * size
    half = size * 0.45
    return (
        (x2, y2),
        (back_x - uy * half, back_y + ux * half),
        (back_x + uy * half, back_y - ux * half),
    )


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def to_svg(drawing: Drawing) -> str:
    """The drawing as SVG text (UTF-8, no external references)."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(drawing.width)}" '
        f'height="{_num(drawing.height)}" viewBox="0 0 {_num(drawing.width)} '
        f'{_num(drawing.height)}" role="img" font-family={quoteattr(FONT)}>'
    ]
    if drawing.title:
        out.append(f"<title>{escape(drawing.title)}</title>")
    out.append(f'<rect width="{_num(drawing.width)}" height="{_num(drawing.height)}" fill="#fff"/>')
    for shape in drawing.shapes:
        out.append(_svg_shape(shape))
    out.append("</svg>")
    return "\n".join(out)


def _svg_shape(shape: Shape) -> str:
    if isinstance(shape, Rect):
        return (
            f'<rect x="{_num(shape.x)}" y="{_num(shape.y)}" width="{_num(shape.width)}" '
            f'height="{_num(shape.height)}" rx="{_num(shape.radius)}" fill="{shape.fill}" '
            f'stroke="{shape.stroke}" stroke-width="{_num(shape.stroke_width)}" '
            f'opacity="{shape.opacity}"/>'
        )
    if isinstance(shape, Line):
        points = " ".join(f"{_num(x)},{_num(y)}" for x, y in shape.points)
        dash = f' stroke-dasharray="{shape.dash}"' if shape.dash else ""
        parts = [
            f'<polyline points="{points}" fill="none" stroke="{shape.color}" '
            f'stroke-width="{_num(shape.width)}"{dash} opacity="{shape.opacity}"/>'
        ]
        if shape.arrow and len(shape.points) >= 2:
            head = " ".join(
                f"{_num(x)},{_num(y)}" for x, y in _arrowhead(shape.points, 5 + 2 * shape.width)
            )
            parts.append(
                f'<polygon points="{head}" fill="{shape.color}" opacity="{shape.opacity}"/>'
            )
        return "".join(parts)
    weight = ' font-weight="bold"' if shape.bold else ""
    family = f" font-family={quoteattr(MONO)}" if shape.mono else ""
    text = (
        f'<text x="{_num(shape.x)}" y="{_num(shape.y)}" font-size="{_num(shape.size)}" '
        f'fill="{shape.color}" text-anchor="{shape.anchor}"{weight}{family} '
        f'opacity="{shape.opacity}">{escape(shape.text)}</text>'
    )
    if shape.background is None:
        return text
    width = text_width(shape.text, shape.size, shape.mono) + 4
    left = {"start": shape.x - 2, "middle": shape.x - width / 2, "end": shape.x - width + 2}
    box = (
        f'<rect x="{_num(left[shape.anchor])}" y="{_num(shape.y - shape.size)}" '
        f'width="{_num(width)}" height="{_num(shape.size * 1.3)}" fill="{shape.background}"/>'
    )
    return box + text


def write_svg(drawing: Drawing, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_svg(drawing), encoding="utf-8")
    return path


def to_png(drawing: Drawing, path: Path, scale: float = 1.0) -> Path:
    """The same primitives drawn by matplotlib (needs the plot extra)."""
    from framelab.common.charts import pyplot

    plt = pyplot()
    dpi = 100 * scale
    fig = plt.figure(figsize=(drawing.width / 100, drawing.height / 100), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, drawing.width)
    ax.set_ylim(drawing.height, 0)
    ax.axis("off")
    points_per_px = 72 / 100  # font sizes are pixels in the drawing, points in matplotlib
    for shape in drawing.shapes:
        if isinstance(shape, Rect):
            from matplotlib.patches import FancyBboxPatch

            ax.add_patch(
                FancyBboxPatch(
                    (shape.x, shape.y),
                    shape.width,
                    shape.height,
                    boxstyle=f"round,pad=0,rounding_size={shape.radius}",
                    facecolor=shape.fill if shape.fill != "none" else "none",
                    edgecolor=shape.stroke,
                    linewidth=shape.stroke_width * points_per_px,
                    alpha=shape.opacity,
                )
            )
        elif isinstance(shape, Line):
            xs = [p[0] for p in shape.points]
            ys = [p[1] for p in shape.points]
            style = (0, [float(v) * 1.0 for v in shape.dash.split()]) if shape.dash else "solid"
            ax.plot(
                xs, ys, color=shape.color, linewidth=shape.width * points_per_px,
                linestyle=style, alpha=shape.opacity, solid_capstyle="butt",
            )  # fmt: skip
            if shape.arrow and len(shape.points) >= 2:
                from matplotlib.patches import Polygon

                head = _arrowhead(shape.points, 5 + 2 * shape.width)
                ax.add_patch(Polygon(head, closed=True, color=shape.color, alpha=shape.opacity))
        else:
            bbox = (
                {"facecolor": shape.background, "edgecolor": "none", "pad": 1}
                if shape.background
                else None
            )
            align = {"start": "left", "middle": "center", "end": "right"}[shape.anchor]
            ax.text(
                shape.x, shape.y, shape.text, fontsize=shape.size * points_per_px,
                color=shape.color, ha=align,
                va="baseline", fontweight="bold" if shape.bold else "normal",
                family="monospace" if shape.mono else "sans-serif", alpha=shape.opacity, bbox=bbox,
            )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)
    return path
