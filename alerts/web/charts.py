"""The pages' charts, built from page data with `svgchart` (one function per chart)."""

from __future__ import annotations

from datetime import datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from alerts.web.aqi_data import CategoryShare, HourAqi
from aqpipe.hj633 import category
from alerts.web.svgchart import CHINA_TZ, Band, Bars, HLine, Line, Markers, Steps, TimeChart

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


# Colours of the case chart: what an inspector must tell apart at a glance.
_RAW = "#8a94a6"  # minute values as measured
_AVG_EXCEEDED = "#d0021b"  # hourly O2-corrected average above the limit
_AVG_OTHER = "#4a4a4a"  # a marked or withdrawn hour
_LIMIT = "#d0021b"
_FLAGGED = "#f5a623"  # a minute with a data logger flag other than N
_MARK_BAND = "#4a90e2"  # an exempting mark's interval
_NOT_JUDGED = "#9b9b9b"  # an hour the engine did not judge (stopped, flagged, too few minutes)


def case_chart_svg(case: dict, marks: list, pollutant_label: str, width: int = 720, height: int = 270) -> str:
    """Minute data (raw) and the hourly O2-corrected averages against the limit line, with
    flagged minutes as orange squares and marked intervals as blue bands.

    `case` is `CaseView.to_json(minutes=True)`; `marks` the case's `Mark`s (store objects).
    """
    hours = case["hours"]
    if not hours:
        return ""
    ends = [datetime.fromisoformat(h["hour_end"]) for h in hours]
    start, end = min(ends) - HOUR, max(ends)
    chart = TimeChart(start=start, end=end, width=width, height=height, y_min=0, y_unit="mg/m³", margin=(22, 56, 26, 44),
                      title=f"{case['outlet']} {pollutant_label}: 分钟数据与小时折算均值 vs 限值 {case['limit']:g}")
    for m in marks:
        if not m.active:
            continue
        chart.add(Band(m.start, m.end or end, _MARK_BAND,
                       title=f"标记 #{m.id} {m.type}: {m.start.astimezone(CHINA_TZ):%m-%d %H:%M}–"
                             f"{(m.end.astimezone(CHINA_TZ).strftime('%m-%d %H:%M') if m.end else '…')} {m.reason}"))
    for h in case.get("not_judged_hours") or []:  # the engine did not judge these hours: shown, greyed
        e = datetime.fromisoformat(h["hour_end"])
        chart.add(Band(e - HOUR, e, _NOT_JUDGED, title=f"{e.astimezone(CHINA_TZ):%m-%d %H:00} 未判定：{h['reason'] or ''}"))
    chart.add(HLine(float(case["limit"]), _LIMIT, f"限值 {case['limit']:g}"))
    points: list = []
    flagged: list = []
    flag_titles: list[str] = []
    previous_end = None
    for h, hour_end in sorted(zip(hours, ends), key=lambda x: x[1]):
        if previous_end is not None and hour_end - HOUR > previous_end:
            points.append((hour_end - HOUR, None))  # hours apart: a gap, not a line across it
        for m in h.get("minutes") or []:
            t = datetime.fromisoformat(m["time"])
            v = m.get("value")
            points.append((t, None if v is None else float(v)))
            if m.get("flag") not in (None, "", "N") and v is not None:
                flagged.append((t, float(v)))
                flag_titles.append(f"{t.astimezone(CHINA_TZ):%H:%M} {v} 标识 {m['flag']}")
        previous_end = hour_end
    chart.add(Line(points, _RAW, width=1.0, title="分钟数据（实测）"))
    for verdict, colour in (("exceeded", _AVG_EXCEEDED), ("marked", _AVG_OTHER), ("withdrawn", _AVG_OTHER)):
        segs = [(e - HOUR, e, h["avg_o2corr"]) for h, e in zip(hours, ends) if h["verdict"] == verdict]
        if segs:
            chart.add(Steps(segs, colour, titles=[f"{e.astimezone(CHINA_TZ):%m-%d %H:00} 折算均值 {v} ({verdict})"
                                                  for _, e, v in segs]))
    if flagged:
        chart.add(Markers(flagged, _FLAGGED, titles=flag_titles))
    return chart.render()
