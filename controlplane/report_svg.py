"""Small inline SVG line charts for the HTML report (no plotting library, no network).

A chart has series (lines, optionally stepped), shaded bands (confidence
sequences), horizontal reference lines (margins, thresholds) and vertical
markers (decisions). Values outside the y range are clipped to it, and a
``None`` value breaks a line. Every element carries a ``<title>`` so that a
reader hovering a point sees its value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

__all__ = ["Band", "HLine", "Series", "VLine", "line_chart", "nice_ticks"]

Point = tuple[float, float | None]


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]
    color: str
    step: bool = False  # hold each value until the next point (weights)
    dash: str | None = None
    dots: bool = True


@dataclass(frozen=True)
class Band:
    label: str
    lower: Sequence[Point]
    upper: Sequence[Point]
    color: str


@dataclass(frozen=True)
class HLine:
    y: float
    label: str
    color: str
    dash: str | None = "6 4"
    left: bool = False  # label at the left end (the right end is the default)


@dataclass(frozen=True)
class VLine:
    x: float
    label: str
    color: str


@dataclass
class _Frame:
    x0: float
    x1: float
    y0: float
    y1: float
    log_y: bool
    width: int
    height: int
    left: int = 64
    right: int = 16
    top: int = 16
    bottom: int = 40
    marks: list[str] = field(default_factory=list)

    def ty(self, y: float) -> float:
        return math.log10(y) if self.log_y else y

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        lo, hi = self.ty(self.y0), self.ty(self.y1)
        v = min(max(self.ty(max(y, self.y0) if self.log_y else y), lo), hi)
        return self.height - self.bottom - (v - lo) / ((hi - lo) or 1.0) * (
            self.height - self.top - self.bottom)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _path(f: _Frame, points: Sequence[Point], step: bool) -> list[str]:
    """One ``d`` string per unbroken run of points."""
    runs: list[str] = []
    cur: list[str] = []
    prev_y: float | None = None
    for x, y in points:
        if y is None or not math.isfinite(y):
            if len(cur) > 1:
                runs.append(" ".join(cur))
            cur, prev_y = [], None
            continue
        if cur and step and prev_y is not None:
            cur.append(f"L{f.px(x):.1f},{f.py(prev_y):.1f}")
        cur.append(f"{'L' if cur else 'M'}{f.px(x):.1f},{f.py(y):.1f}")
        prev_y = y
    if len(cur) > 1:
        runs.append(" ".join(cur))
    return runs


def _band(f: _Frame, band: Band) -> str:
    pairs = [(x, lo, hi) for (x, lo), (_, hi) in zip(band.lower, band.upper, strict=True)
             if lo is not None and hi is not None and math.isfinite(lo)]
    if len(pairs) < 2:
        return ""
    top = [f"{f.px(x):.1f},{f.py(hi if math.isfinite(hi) else f.y1):.1f}" for x, _, hi in pairs]
    bottom = [f"{f.px(x):.1f},{f.py(lo):.1f}" for x, lo, _ in reversed(pairs)]
    return (f'<polygon class="band" points="{" ".join(top + bottom)}" fill="{band.color}" '
            f'fill-opacity="0.18" stroke="none"><title>{escape(band.label)}</title></polygon>')


def line_chart(title: str, x_label: str, y_label: str, series: Sequence[Series], *,
               bands: Sequence[Band] = (), hlines: Sequence[HLine] = (),
               vlines: Sequence[VLine] = (), y_range: tuple[float, float] | None = None,
               x_range: tuple[float, float] | None = None, log_y: bool = False,
               width: int = 760, height: int = 260) -> str:
    xs = [x for s in series for x, y in s.points if y is not None] + [v.x for v in vlines]
    ys = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    ys += [h.y for h in hlines]
    x0, x1 = x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    if y_range is None:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (hi - lo) * 0.1 or 1.0
        y_range = (lo if log_y else lo - pad, hi if log_y else hi + pad)
    f = _Frame(x0, x1 if x1 > x0 else x0 + 1.0, *y_range, log_y=log_y, width=width,
               height=height)
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} '
           f'{height}" role="img" aria-label="{escape(title)}">', f"<title>{escape(title)}</title>",
           f'<rect x="{f.left}" y="{f.top}" width="{width - f.left - f.right}" '
           f'height="{height - f.top - f.bottom}" fill="#fff" stroke="#ccc"/>']
    if log_y:
        lo_e, hi_e = math.floor(math.log10(f.y0)), math.ceil(math.log10(f.y1))
        yticks = [10.0 ** e for e in range(lo_e, hi_e + 1) if f.y0 <= 10.0 ** e <= f.y1]
    else:
        yticks = nice_ticks(f.y0, f.y1)
    for y in yticks:
        out.append(f'<line x1="{f.left}" x2="{width - f.right}" y1="{f.py(y):.1f}" '
                   f'y2="{f.py(y):.1f}" stroke="#eee"/><text x="{f.left - 6}" '
                   f'y="{f.py(y) + 4:.1f}" text-anchor="end" font-size="11">{_fmt(y)}</text>')
    for x in nice_ticks(f.x0, f.x1, 8):
        out.append(f'<text x="{f.px(x):.1f}" y="{height - f.bottom + 16}" text-anchor="middle" '
                   f'font-size="11">{_fmt(x)}</text>')
    out.append(f'<text x="{(f.left + width - f.right) / 2:.0f}" y="{height - 6}" '
               f'text-anchor="middle" font-size="12">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14,{(height - f.bottom + f.top) / 2:.0f}) '
               f'rotate(-90)" text-anchor="middle" font-size="12">{escape(y_label)}</text>')
    out += [_band(f, b) for b in bands]
    for h in hlines:
        dash = f' stroke-dasharray="{h.dash}"' if h.dash else ""
        out.append(f'<line class="hline" x1="{f.left}" x2="{width - f.right}" '
                   f'y1="{f.py(h.y):.1f}" y2="{f.py(h.y):.1f}" stroke="{h.color}"{dash}>'
                   f"<title>{escape(h.label)}: {_fmt(h.y)}</title></line>"
                   f'<text x="{f.left + 4 if h.left else width - f.right - 4}" '
                   f'y="{f.py(h.y) - 4:.1f}" text-anchor="{"start" if h.left else "end"}" '
                   f'font-size="11" fill="{h.color}">{escape(h.label)}</text>')
    for v in vlines:
        out.append(f'<line class="vline" x1="{f.px(v.x):.1f}" x2="{f.px(v.x):.1f}" '
                   f'y1="{f.top}" y2="{height - f.bottom}" stroke="{v.color}" '
                   f'stroke-dasharray="2 3"><title>{escape(v.label)}</title></line>')
    for s in series:
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        for d in _path(f, s.points, s.step):
            out.append(f'<path class="series" d="{d}" fill="none" stroke="{s.color}" '
                       f'stroke-width="2"{dash}><title>{escape(s.label)}</title></path>')
        if s.dots and len(s.points) <= 400:
            for px, value in s.points:
                if value is not None and math.isfinite(value):
                    out.append(f'<circle cx="{f.px(px):.1f}" cy="{f.py(value):.1f}" r="2.2" '
                               f'fill="{s.color}"><title>{escape(s.label)} at {_fmt(px)}: '
                               f"{_fmt(value)}</title></circle>")
    out.append("</svg>")
    legend = "".join(f'<span class="key"><i style="background:{s.color}"></i>'
                     f"{escape(s.label)}</span>" for s in series)
    legend += "".join(f'<span class="key"><i style="background:{b.color};opacity:.35"></i>'
                      f"{escape(b.label)}</span>" for b in bands)
    return (f'<figure><figcaption>{escape(title)}</figcaption>{"".join(out)}'
            f'<div class="legend">{legend}</div></figure>')
