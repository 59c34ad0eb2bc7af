"""alerts/web/svgchart.py: scales, ticks, layers, escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest

from alerts.web.svgchart import Band, Bars, ChartError, HLine, Line, Markers, Steps, TimeChart, nice_range, nice_step

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 11, 28, 0, 0, tzinfo=timezone.utc)


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # also proves the output is well-formed XML


@pytest.mark.parametrize("span, step", [(10, 2), (100, 20), (7, 2), (1, 0.2), (460, 100), (0.03, 0.01)])
def test_nice_step_is_one_two_or_five_times_a_power_of_ten(span, step):
    assert nice_step(span) == pytest.approx(step)


def test_nice_range_widens_to_whole_steps():
    assert nice_range(3, 97) == (0, 100, 20)
    assert nice_range(50, 50)[0] <= 50 < nice_range(50, 50)[1]


def test_nice_range_refuses_an_inverted_range():
    with pytest.raises(ChartError):
        nice_range(5, 1)


def test_x_and_y_map_the_ends_of_the_ranges_to_the_plot_edges():
    c = TimeChart(T0, T0 + timedelta(hours=10), width=600, height=200, y_min=0, y_max=100, margin=(10, 20, 30, 40))
    rng = c.y_range()
    assert c.x(T0) == 40 and c.x(T0 + timedelta(hours=10)) == 580
    assert c.y(0, rng) == 170 and c.y(100, rng) == 10
    assert c.y(1000, rng) == 10  # an outlier is clipped to the edge, not drawn off the chart


def test_naive_times_are_refused():
    c = TimeChart(T0, T0 + timedelta(hours=1))
    with pytest.raises(ChartError):
        c.x(datetime(2026, 1, 1))


def test_y_range_covers_the_data_and_the_limit_line():
    c = TimeChart(T0, T0 + timedelta(hours=2))
    c.add(Line([(T0, 20.0), (T0 + timedelta(hours=1), 40.0)], "#00f")).add(HLine(35.0, "#f00", "限值 35"))
    lo, hi, step = c.y_range()
    assert lo == 0 and hi >= 40


def test_a_none_breaks_a_line_into_two_polylines():
    pts = [(T0 + timedelta(minutes=m), v) for m, v in enumerate([1.0, 2.0, None, 3.0, 4.0])]
    svg = _parse(TimeChart(T0, T0 + timedelta(minutes=5)).add(Line(pts, "#00f")).render())
    assert len(svg.findall(f".//{SVG}polyline")) == 2


def test_every_layer_is_drawn_with_its_class_and_tooltips_escaped():
    c = TimeChart(T0, T0 + timedelta(hours=3), title="<chart>")
    c.add(Band(T0, T0 + timedelta(hours=1), "#888", title="停炉 <script>alert(1)</script>"))
    c.add(HLine(50, "#f00", "限值 <50>"))
    c.add(Steps([(T0, T0 + timedelta(hours=1), 60.0)], "#000", titles=["小时均值 & 折算"]))
    c.add(Bars([(T0, T0 + timedelta(hours=1), 30.0, "#00e400")], titles=["AQI 30"]))
    c.add(Markers([(T0 + timedelta(minutes=30), 70.0)], "#c00", titles=["flag D"]))
    text = c.render()
    svg = _parse(text)
    classes = {e.get("class") for e in svg.iter()}
    assert {"band", "hline", "step", "bar", "marker"} <= classes
    assert "<script>" not in text and "&lt;script&gt;" in text
    titles = [t.text for t in svg.iter(f"{SVG}title")]
    assert "停炉 <script>alert(1)</script>" in titles and "<chart>" in titles


def test_bars_are_coloured_per_bar_and_stand_on_zero():
    c = TimeChart(T0, T0 + timedelta(hours=2), y_min=0, height=200, margin=(0, 0, 0, 0))
    c.add(Bars([(T0, T0 + timedelta(hours=1), 50.0, "#00e400"), (T0 + timedelta(hours=1), T0 + timedelta(hours=2),
                                                               None, "#fff")]))
    bars = [e for e in _parse(c.render()).iter(f"{SVG}rect") if e.get("class") == "bar"]
    assert len(bars) == 1  # a missing hour draws nothing
    bar = bars[0]
    assert bar.get("fill") == "#00e400"
    assert float(bar.get("y")) + float(bar.get("height")) == pytest.approx(200)


def test_x_ticks_are_labelled_in_china_time():
    c = TimeChart(T0, T0 + timedelta(hours=6))  # 08:00 .. 14:00 China time
    labels = [t.text for t in _parse(c.render()).iter(f"{SVG}text")]
    assert "08:00" in labels and "14:00" in labels


def test_a_band_outside_the_chart_draws_nothing():
    c = TimeChart(T0, T0 + timedelta(hours=1))
    c.add(Band(T0 - timedelta(hours=3), T0 - timedelta(hours=2), "#888"))
    assert 'class="band"' not in c.render()
