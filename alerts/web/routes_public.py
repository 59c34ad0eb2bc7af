"""Public pages (no login): the city's hourly AQI (`/aqi`, `/aqi.json`) and the category styles."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from alerts.web.aqi_data import STANDARD_NAMES, CityAqi, load_city_aqi
from alerts.web.charts import aqi_history_svg, share_bar_svg
from aqpipe.hj633 import CATEGORIES, SOURCE
from alerts.web.render import render
from alerts.web.security import ctx
from aqpipe.influx import QueryError

router = APIRouter()


def _city(request: Request) -> CityAqi:
    c = ctx(request)
    try:
        return load_city_aqi(c.influx, c.registry, c.cfg.aggregator.cn_2026_effective)
    except QueryError as e:
        raise HTTPException(503, f"空气质量数据暂不可用 (InfluxDB): {e}") from None


@router.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    return RedirectResponse("/aqi", status_code=303)


@router.get("/healthz", include_in_schema=False)
def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok\n")


@router.get("/aqi", include_in_schema=False)
def aqi_page(request: Request) -> Response:
    city = _city(request)
    charts = {s.station: aqi_history_svg(s.history, f"{s.name} 近24小时 AQI") for s in city.with_data}
    return render(request, "aqi.html", {
        "city": city, "charts": charts, "share_bar": share_bar_svg(city.summary), "categories": CATEGORIES,
        "source": SOURCE, "standard_names": STANDARD_NAMES,
    })


@router.get("/aqi.json", tags=["public"], summary="Latest hourly AQI of every station (China standard in force)")
def aqi_json(request: Request) -> JSONResponse:
    return JSONResponse(_city(request).to_json(), headers={"Access-Control-Allow-Origin": "*",
                                                           "Cache-Control": "public, max-age=60"})


@router.get("/categories.css", include_in_schema=False)
def categories_css() -> Response:
    """The category colours as CSS classes, from the HJ 633 table (one source for every page)."""
    rules = [f".cat{c.level}{{background:{c.colour};color:{c.text_colour}}}"
             f".cat{c.level}-border{{border-color:{c.colour}}}" for c in CATEGORIES]
    return Response("\n".join(rules) + "\n", media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})
