"""The public AQI page's data: the latest hourly AQI of every station from InfluxDB.

Reads `aqi_hourly` (written by the aggregator, one point per station, standard and hour
end) with InfluxQL; computes nothing of the AQI itself. The Chinese standard shown is
the one in force for the hour: HJ 633-2012 (`cn-2012`) before `aggregator.cn_2026_effective`
(a China date, the same key the aggregator reads), HJ 633-2026 (`cn-2026`) from then on,
judged like the aggregator by the China date of the hour's start. When the aggregator
writes both standards side by side, the one in force is picked; the other is not shown.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from aqpipe.hj633 import CATEGORIES, POLLUTANT_NAMES, AqiCategory, category
from aqpipe.influx import InfluxQL
from aqpipe.registry import Registry

log = logging.getLogger("aqpipe.web")
CHINA_TZ = timezone(timedelta(hours=8))
HOUR = timedelta(hours=1)
HISTORY_HOURS = 24
_CN_KEY = re.compile(r"^cn-\d{4}$")  # the standard tags the aggregator writes for China
STANDARD_NAMES = {"cn-2012": "HJ 633-2012", "cn-2026": "HJ 633-2026"}


class AqiDataError(RuntimeError):
    """A stored point does not have the documented shape (names station, standard and time)."""


def cn_key_in_force(hour_end: datetime, effective: date) -> str:
    """The `standard` tag in force for the hour ending at `hour_end`.

    Like the aggregator: the hour's start, as a China date, against the effective date of
    GB 3095-2026 / HJ 633-2026 (its two phases share the tag `cn-2026`).
    """
    start_day = (hour_end - HOUR).astimezone(CHINA_TZ).date()
    return "cn-2026" if start_day >= effective else "cn-2012"


@dataclass(frozen=True)
class HourAqi:
    hour_end: datetime
    aqi: int | None
    level: int | None


@dataclass
class StationAqi:
    station: str
    name: str
    district: str
    standard: str | None = None
    hour_end: datetime | None = None  # None: no hourly AQI stored for this station
    aqi: int | None = None
    category: AqiCategory | None = None
    primary: list[str] = field(default_factory=list)
    iaqi: dict[str, int] = field(default_factory=dict)
    conc: dict[str, float] = field(default_factory=dict)
    history: list[HourAqi] = field(default_factory=list)  # the 24 hours ending at hour_end, oldest first

    def to_json(self) -> dict:
        return {
            "station": self.station, "name": self.name, "district": self.district,
            "standard": self.standard,
            "time": self.hour_end.isoformat() if self.hour_end else None,
            "aqi": self.aqi,
            "category": self.category.to_json() if self.category else None,
            "primary": self.primary,
            "iaqi": self.iaqi, "conc": self.conc,
            "last_24h": [{"time": h.hour_end.isoformat(), "aqi": h.aqi, "category": h.level} for h in self.history],
        }


@dataclass(frozen=True)
class CategoryShare:
    category: AqiCategory
    count: int
    share: float  # of the stations with data, 0..1


@dataclass
class CityAqi:
    generated_at: datetime
    standards: list[str]  # the standard tags shown (one, except across the effective date)
    stations: list[StationAqi]
    summary: list[CategoryShare]

    @property
    def with_data(self) -> list[StationAqi]:
        return [s for s in self.stations if s.aqi is not None]

    @property
    def latest_hour(self) -> datetime | None:
        times = [s.hour_end for s in self.stations if s.hour_end]
        return max(times) if times else None

    def to_json(self) -> dict:
        latest = self.latest_hour
        return {
            "generated_at": self.generated_at.isoformat(),
            "latest_hour": latest.isoformat() if latest else None,
            "standards": [{"key": k, "name": STANDARD_NAMES.get(k, k)} for k in self.standards],
            "stations": [s.to_json() for s in self.stations],
            "summary": [{"level": c.category.level, "name": c.category.name, "colour": c.category.colour,
                         "count": c.count, "share": round(c.share, 4)} for c in self.summary],
            "categories": [c.to_json() for c in CATEGORIES],
        }


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc)


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def _station_point(row: dict, s: StationAqi) -> None:
    try:
        s.hour_end = _time(row["time"])
        s.standard = row["standard"]
        s.aqi = int(row["aqi"])
        s.category = category(int(row["category"]))
    except (KeyError, TypeError, ValueError) as e:
        raise AqiDataError(f"aqi_hourly point of station {row.get('station')!r} standard {row.get('standard')!r} "
                           f"at {row.get('time')}: {e}") from e
    s.primary = [p for p in str(row.get("primary") or "").split(",") if p]
    s.iaqi = {k[5:]: int(v) for k, v in row.items() if k.startswith("iaqi_") and v is not None}
    s.conc = {k[5:]: float(v) for k, v in row.items() if k.startswith("conc_") and v is not None}


def load_city_aqi(q: InfluxQL, registry: Registry, effective: date, now: datetime | None = None) -> CityAqi:
    """The latest hourly AQI of every station (registry stations first, then any other with
    data), each with its 24-hour history and the city's share of stations per category."""
    now = now or datetime.now(timezone.utc)
    rows = q.rows('SELECT * FROM aqi_hourly WHERE standard =~ /^cn-/ GROUP BY station, standard '
                  'ORDER BY time DESC LIMIT 1')
    # Per station, the newest hour whose stored standard is the one in force for that hour.
    best: dict[str, dict] = {}
    fallback: dict[str, dict] = {}
    for row in rows:
        if not _CN_KEY.match(str(row.get("standard", ""))) or row.get("time") is None:
            continue
        station = row["station"]
        candidates = best if row["standard"] == cn_key_in_force(_time(row["time"]), effective) else fallback
        if station not in candidates or row["time"] > candidates[station]["time"]:
            candidates[station] = row
    for station, row in fallback.items():  # only a standard not in force is stored: show it, labelled
        best.setdefault(station, row)

    stations: dict[str, StationAqi] = {
        sid: StationAqi(sid, st.name or sid, st.district) for sid, st in registry.stations.items()}
    for sid, row in best.items():
        s = stations.setdefault(sid, StationAqi(sid, sid, ""))
        try:
            _station_point(row, s)
        except AqiDataError as e:  # one bad point must not take the city's page down: that station shows no data
            log.warning("event=aqi_point_invalid %s", e)
            stations[sid] = StationAqi(sid, s.name, s.district)

    _load_history(q, [s for s in stations.values() if s.hour_end is not None])
    summary = city_summary(list(stations.values()))
    shown = sorted({s.standard for s in stations.values() if s.standard})
    return CityAqi(now, shown, list(stations.values()), summary)


def _load_history(q: InfluxQL, stations: list[StationAqi]) -> None:
    by_standard: dict[str, list[StationAqi]] = {}
    for s in stations:
        by_standard.setdefault(s.standard or "", []).append(s)
    for standard, group in by_standard.items():
        first = min(s.hour_end for s in group) - HOUR * HISTORY_HOURS  # type: ignore[operator]
        last = max(s.hour_end for s in group)  # type: ignore[type-var]
        rows = q.rows(f"SELECT aqi, category FROM aqi_hourly WHERE standard = '{standard}' "
                      f"AND time > {_ns(first)} AND time <= {_ns(last)} GROUP BY station")
        per: dict[str, dict[datetime, HourAqi]] = {}
        for row in rows:
            t = _time(row["time"])
            per.setdefault(row["station"], {})[t] = HourAqi(
                t, None if row.get("aqi") is None else int(row["aqi"]),
                None if row.get("category") is None else int(row["category"]))
        for s in group:
            got = per.get(s.station, {})
            hours = [s.hour_end - HOUR * k for k in range(HISTORY_HOURS - 1, -1, -1)]  # type: ignore[operator]
            s.history = [got.get(t, HourAqi(t, None, None)) for t in hours]


def city_summary(stations: list[StationAqi]) -> list[CategoryShare]:
    """Share of the stations with data in each of the six categories (all six listed)."""
    with_data = [s for s in stations if s.category is not None]
    n = len(with_data)
    out = []
    for c in CATEGORIES:
        count = sum(1 for s in with_data if s.category is not None and s.category.level == c.level)
        out.append(CategoryShare(c, count, count / n if n else 0.0))
    return out


def pollutant_label(code: str) -> str:
    return POLLUTANT_NAMES.get(code, code)
