"""Small server-drawn SVG charts: time on x, one value axis on y.

The pages draw their charts here instead of loading a charting library: nothing comes
from the internet, there is no build step, and a chart is a string a test can parse.
One `TimeChart` holds layers drawn in order (bands under lines under markers); every
label and tooltip is XML-escaped, so a mark's reason typed by a user cannot inject
markup into the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from xml.sax.saxutils import escape, quoteattr

CHINA_TZ = timezone(timedelta(hours=8))


class ChartError(ValueError):
    """A chart asked for something it cannot draw (naive time, empty or inverted range)."""


def _epoch(t: datetime) -> float:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ChartError(f"naive datetime {t.isoformat()}: chart times must carry a timezone")
    return t.timestamp()


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A round tick step (1, 2 or 5 × 10^k) giving about `target_ticks` ticks over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(target_ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude  # pragma: no cover (the loop always returns)


def nice_range(lo: float, hi: float, target_ticks: int = 5) -> tuple[float, float, float]:
    """(lo, hi, step) widened to whole steps, so the axis ends on a labelled tick."""
    if hi < lo:
        raise ChartError(f"inverted value range {lo} > {hi}")
    if hi == lo:
        hi = lo + 1.0
    step = nice_step(hi - lo, target_ticks)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def _fmt(v: float) -> str:
    """Coordinates with one decimal: small output, sub-pixel precision is invisible."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


@dataclass(frozen=True)
class Band:
    """A shaded time interval (a marked interval, a night), drawn under everything."""

    start: datetime
    end: datetime
    fill: str
    title: str = ""
    opacity: float = 0.25


@dataclass(frozen=True)
class HLine:
    """A horizontal reference line (a limit) with its label at the right end."""

    value: float
    colour: str
    label: str = ""
    dash: str = "6 4"


@dataclass(frozen=True)
class Line:
    """A polyline through (time, value); None breaks the line (a gap is shown as a gap)."""

    points: list[tuple[datetime, float | None]]
    colour: str
    width: float = 1.5
    title: str = ""


@dataclass(frozen=True)
class Steps:
    """Horizontal segments [start, end) at a value (hourly averages over their hour)."""

    segments: list[tuple[datetime, datetime, float | None]]
    colour: str
    width: float = 3.0
    title: str = ""
    titles: list[str] = field(default_factory=list)  # one tooltip per segment, optional


@dataclass(frozen=True)
class Bars:
    """One bar per interval [start, end), each with its own fill (AQI by category colour)."""

    bars: list[tuple[datetime, datetime, float | None, str]]  # start, end, value, fill
    titles: list[str] = field(default_factory=list)
    gap: float = 1.0  # px between bars


@dataclass(frozen=True)
class Markers:
    """Points drawn as small squares (flagged minutes), each with a tooltip."""

    points: list[tuple[datetime, float]]
    colour: str
    size: float = 4.0
    titles: list[str] = field(default_factory=list)


Layer = Band | HLine | Line | Steps | Bars | Markers
_ORDER = {Band: 0, Bars: 1, HLine: 2, Steps: 3, Line: 4, Markers: 5}


@dataclass
class TimeChart:
    """A chart over [start, end] in time; y from the data (or given), ticks on round values."""

    start: datetime
    end: datetime
    width: int = 600
    height: int = 220
    y_min: float | None = None
    y_max: float | None = None
    y_unit: str = ""
    title: str = ""
    tz: tzinfo = CHINA_TZ  # tick labels in local (China) time
    layers: list[Layer] = field(default_factory=list)
    margin: tuple[int, int, int, int] = (10, 56, 26, 44)  # top, right, bottom, left

    def add(self, layer: Layer) -> "TimeChart":
        self.layers.append(layer)
        return self

    # -- scales -----------------------------------------------------------------------
    def _values(self) -> list[float]:
        out: list[float] = []
        for layer in self.layers:
            if isinstance(layer, HLine):
                out.append(layer.value)
            elif isinstance(layer, Line):
                out += [v for _, v in layer.points if v is not None]
            elif isinstance(layer, Steps):
                out += [v for _, _, v in layer.segments if v is not None]
            elif isinstance(layer, Bars):
                out += [v for _, _, v, _ in layer.bars if v is not None]
            elif isinstance(layer, Markers):
                out += [v for _, v in layer.points]
        return [v for v in out if math.isfinite(v)]

    def y_range(self) -> tuple[float, float, float]:
        values = self._values()
        lo = self.y_min if self.y_min is not None else min(values + [0.0])
        hi = self.y_max if self.y_max is not None else max(values + [lo + 1.0])
        return nice_range(lo, hi)

    def x(self, t: datetime) -> float:
        t0, t1 = _epoch(self.start), _epoch(self.end)
        if t1 <= t0:
            raise ChartError(f"empty time range {self.start.isoformat()} .. {self.end.isoformat()}")
        top, right, bottom, left = self.margin
        return left + (_epoch(t) - t0) / (t1 - t0) * (self.width - left - right)

    def y(self, v: float, rng: tuple[float, float, float]) -> float:
        lo, hi, _ = rng
        top, right, bottom, left = self.margin
        frac = (min(max(v, lo), hi) - lo) / (hi - lo)  # clipped: an outlier stays on the chart's edge
        return top + (1 - frac) * (self.height - top - bottom)

    # -- rendering --------------------------------------------------------------------
    def render(self) -> str:
        rng = self.y_range()
        top, right, bottom, left = self.margin
        w, h = self.width, self.height
        aria = quoteattr(self.title or "chart")
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" '
                 f'width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-label={aria}>']
        if self.title:
            parts.append(f"<title>{escape(self.title)}</title>")
        parts.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" '
                     'fill="#fff" stroke="#ccc"/>')
        parts += self._y_axis(rng)
        parts += self._x_axis()
        for layer in sorted(self.layers, key=lambda layer: _ORDER[type(layer)]):
            parts += self._draw(layer, rng)
        parts.append("</svg>")
        return "".join(parts)

    def _y_axis(self, rng: tuple[float, float, float]) -> list[str]:
        lo, hi, step = rng
        top, right, bottom, left = self.margin
        out = []
        n = int(round((hi - lo) / step))
        for k in range(n + 1):
            v = lo + k * step
            y = _fmt(self.y(v, rng))
            out.append(f'<line x1="{left}" x2="{self.width - right}" y1="{y}" y2="{y}" stroke="#eee"/>')
            out.append(f'<text x="{left - 4}" y="{y}" font-size="11" text-anchor="end" '
                       f'dominant-baseline="middle" fill="#555">{escape(_label(v))}</text>')
        if self.y_unit:  # above the axis, in the top margin
            out.append(f'<text x="{left}" y="{max(top - 12, 9)}" font-size="11" text-anchor="middle" '
                       f'fill="#555">{escape(self.y_unit)}</text>')
        return out

    def _x_axis(self) -> list[str]:
        span_h = (_epoch(self.end) - _epoch(self.start)) / 3600
        # About six labelled ticks on whole hours, in local time.
        step_h = next((s for s in (1, 2, 3, 4, 6, 12, 24, 48) if span_h / s <= 6), 24 * max(1, math.ceil(span_h / 144)))
        local = self.start.astimezone(self.tz)
        first = local.replace(minute=0, second=0, microsecond=0)
        if first < local:
            first += timedelta(hours=1)
        while first.hour % step_h and step_h <= 24:
            first += timedelta(hours=1)
        out = []
        top, right, bottom, left = self.margin
        t = first
        while t <= self.end:
            x = _fmt(self.x(t))
            text = t.strftime("%m-%d") if t.hour == 0 else t.strftime("%H:%M")
            out.append(f'<line x1="{x}" x2="{x}" y1="{self.height - bottom}" y2="{self.height - bottom + 4}" stroke="#999"/>')
            out.append(f'<text x="{x}" y="{self.height - bottom + 16}" font-size="11" text-anchor="middle" '
                       f'fill="#555">{escape(text)}</text>')
            t += timedelta(hours=step_h)
        return out

    def _draw(self, layer: Layer, rng: tuple[float, float, float]) -> list[str]:
        top, right, bottom, left = self.margin
        if isinstance(layer, Band):
            x0, x1 = self.x(max(layer.start, self.start)), self.x(min(layer.end, self.end))
            if x1 <= x0:
                return []
            title = f"<title>{escape(layer.title)}</title>" if layer.title else ""
            return [f'<rect class="band" x="{_fmt(x0)}" y="{top}" width="{_fmt(x1 - x0)}" '
                    f'height="{self.height - top - bottom}" fill={quoteattr(layer.fill)} '
                    f'fill-opacity="{layer.opacity}">{title}</rect>']
        if isinstance(layer, HLine):
            y = _fmt(self.y(layer.value, rng))
            out = [f'<line class="hline" x1="{left}" x2="{self.width - right}" y1="{y}" y2="{y}" '
                   f'stroke={quoteattr(layer.colour)} stroke-width="1.5" stroke-dasharray={quoteattr(layer.dash)}/>']
            if layer.label:
                out.append(f'<text x="{self.width - right + 3}" y="{y}" font-size="11" dominant-baseline="middle" '
                           f'fill={quoteattr(layer.colour)}>{escape(layer.label)}</text>')
            return out
        if isinstance(layer, Line):
            out = []
            for run in _runs(layer.points):
                pts = " ".join(f"{_fmt(self.x(t))},{_fmt(self.y(v, rng))}" for t, v in run)
                if len(run) == 1:
                    t, v = run[0]
                    out.append(f'<circle cx="{_fmt(self.x(t))}" cy="{_fmt(self.y(v, rng))}" r="1.5" '
                               f'fill={quoteattr(layer.colour)}/>')
                else:
                    out.append(f'<polyline class="line" points="{pts}" fill="none" stroke={quoteattr(layer.colour)} '
                               f'stroke-width="{layer.width}"/>')
            if out and layer.title:
                out.insert(0, f'<g><title>{escape(layer.title)}</title>')
                out.append("</g>")
            return out
        if isinstance(layer, Steps):
            out = []
            for k, (t0, t1, v) in enumerate(layer.segments):
                if v is None:
                    continue
                y = _fmt(self.y(v, rng))
                tip = layer.titles[k] if k < len(layer.titles) else layer.title
                title = f"<title>{escape(tip)}</title>" if tip else ""
                out.append(f'<line class="step" x1="{_fmt(self.x(t0))}" x2="{_fmt(self.x(t1))}" y1="{y}" y2="{y}" '
                           f'stroke={quoteattr(layer.colour)} stroke-width="{layer.width}">{title}</line>')
            return out
        if isinstance(layer, Bars):
            out = []
            base = self.y(max(rng[0], 0.0), rng)
            for k, (t0, t1, v, fill) in enumerate(layer.bars):
                if v is None:
                    continue
                x0, x1 = self.x(t0), self.x(t1)
                y = self.y(v, rng)
                tip = layer.titles[k] if k < len(layer.titles) else ""
                title = f"<title>{escape(tip)}</title>" if tip else ""
                out.append(f'<rect class="bar" x="{_fmt(x0 + layer.gap / 2)}" y="{_fmt(y)}" '
                           f'width="{_fmt(max(x1 - x0 - layer.gap, 0.5))}" height="{_fmt(max(base - y, 0.5))}" '
                           f'fill={quoteattr(fill)} stroke="#0003" stroke-width="0.5">{title}</rect>')
            return out
        if isinstance(layer, Markers):
            out = []
            s = layer.size
            for k, (t, v) in enumerate(layer.points):
                tip = layer.titles[k] if k < len(layer.titles) else ""
                title = f"<title>{escape(tip)}</title>" if tip else ""
                out.append(f'<rect class="marker" x="{_fmt(self.x(t) - s / 2)}" y="{_fmt(self.y(v, rng) - s / 2)}" '
                           f'width="{_fmt(s)}" height="{_fmt(s)}" fill={quoteattr(layer.colour)}>{title}</rect>')
            return out
        raise ChartError(f"unknown layer {type(layer).__name__}")  # pragma: no cover


def _runs(points: list[tuple[datetime, float | None]]) -> list[list[tuple[datetime, float]]]:
    """Consecutive points with a value; a None ends a run."""
    runs: list[list[tuple[datetime, float]]] = []
    current: list[tuple[datetime, float]] = []
    for t, v in points:
        if v is None or not math.isfinite(v):
            if current:
                runs.append(current)
            current = []
        else:
            current.append((t, v))
    if current:
        runs.append(current)
    return runs


def rgb_hex(rgb: tuple[int, int, int]) -> str:
    """(255, 126, 0) -> '#ff7e00'."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)
