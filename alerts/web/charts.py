"""The pages' charts, built from page data with `svgchart` (one function per chart)."""

from __future__ import annotations

from datetime import timedelta
from xml.sax.saxutils import escape, quoteattr

from alerts.web.aqi_data import CategoryShare, HourAqi
from alerts.web.hj633 import category
from alerts.web.svgchart import CHINA_TZ, Bars, HLine, TimeChart

HOUR = timedelta(hours=1)


def aqi_history_svg(history: list[HourAqi], title: str) -> str:
    """The last hours of a station as bars in their category colours, 0 to the top AQI."""
    if not history:
        return ""
    bars = []
    titles = []
    for h in history:
        fill = category(h.level).colour if h.level else "#cccccc"
        bars.append((h.hour_end - HOUR, h.hour_end, None if h.aqi is None else float(h.aqi), fill))
        local = h.hour_end.astimezone(CHINA_TZ).strftime("%m-%d %H:%M")
        titles.append(f"{local} AQI {h.aqi if h.aqi is not None else '无数据'}")
    chart = TimeChart(start=history[0].hour_end - HOUR, end=history[-1].hour_end, width=340, height=130,
                      y_min=0, title=title, margin=(8, 30, 24, 34))
    chart.add(Bars(bars, titles=titles))
    chart.add(HLine(100, "#777777", "100", dash="3 3"))
    return chart.render()


def share_bar_svg(summary: list[CategoryShare], width: int = 600, height: int = 28) -> str:
    """The city's stations split by category, one stacked bar (widths = shares)."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="sharebar" viewBox="0 0 {width} {height}" '
             f'width="100%" preserveAspectRatio="none" role="img" aria-label="各类别站点占比">']
    x = 0.0
    total = sum(s.count for s in summary)
    if total == 0:
        parts.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#dddddd"><title>无数据</title></rect>')
    for s in summary:
        if s.count == 0:
            continue
        w = s.count / total * width
        tip = f"{s.category.name}: {s.count} 站 ({s.share:.0%})"
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill={quoteattr(s.category.colour)}>'
                     f"<title>{escape(tip)}</title></rect>")
        x += w
    parts.append("</svg>")
    return "".join(parts)
