"""What the engine reads from InfluxDB (InfluxQL): the minute data behind a stack hour (the
case's evidence), a stack hour's rollup, a station's hourly AQI history, and the inputs of
the data-quality checks (last reading per device, recent values)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from aqpipe.influx import InfluxQL

NS = 1_000_000_000
HOUR = timedelta(hours=1)
CHINA = timezone(timedelta(hours=8))


def _lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * NS


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / NS, timezone.utc)


class InfluxSource:
    def __init__(self, query: InfluxQL) -> None:
        self.q = query

    def minutes(self, outlet: str, pollutant: str, hour_end: datetime) -> list[dict[str, Any]]:
        """The readings of the hour (hour_end - 1 h, hour_end], oldest first: time (China), the
        pollutant's value, O2, the pollutant's flag (N when none) and the plant status."""
        rows = self.q.rows(f"SELECT * FROM stack WHERE outlet = {_lit(outlet)} AND time > {_ns(hour_end - HOUR)} "
                           f"AND time <= {_ns(hour_end)}")
        out = []
        for r in sorted(rows, key=lambda r: r["time"]):
            m = {"time": _time(r["time"]).astimezone(CHINA).isoformat(), "value": r.get(pollutant), "o2": r.get("o2"),
                 "flag": r.get(f"{pollutant}_flag") or "N"}
            if r.get("status"):
                m["status"] = r["status"]
            out.append(m)
        return out

    def hourly(self, outlet: str, pollutant: str, hour_end: datetime) -> dict[str, Any] | None:
        """The aggregator's `stack_hourly` point of that hour, shaped like its derived record."""
        rows = self.q.rows(f'SELECT avg, avg_o2corr, "limit", limit_source, exceeded, valid_minutes FROM stack_hourly '
                           f"WHERE outlet = {_lit(outlet)} AND pollutant = {_lit(pollutant)} AND time = {_ns(hour_end)}")
        if not rows:
            return None
        r = rows[0]
        return {"outlet": outlet, "pollutant": pollutant, "time": hour_end.isoformat(), "avg": r.get("avg"),
                "avg_o2corr": r.get("avg_o2corr"), "limit": r.get("limit"), "limit_source": r.get("limit_source"),
                "exceeded": r.get("exceeded"), "valid_minutes": r.get("valid_minutes") or 0}

    def aqi_history(self, station: str, standard: str, hour_end: datetime, hours: int) -> list[float | None]:
        """Hourly AQI of the `hours` + 1 hours ending at hour_end, oldest first, None where missing."""
        start = hour_end - hours * HOUR
        rows = self.q.rows(f"SELECT aqi FROM aqi_hourly WHERE station = {_lit(station)} AND standard = {_lit(standard)} "
                           f"AND time >= {_ns(start)} AND time <= {_ns(hour_end)}")
        by_t = {int(r["time"]): r.get("aqi") for r in rows}
        return [by_t.get(_ns(start + i * HOUR)) for i in range(hours + 1)]

    def last_seen(self, measurement: str, window: timedelta) -> tuple[dict[str, datetime], set[str]]:
        """Per device: the time of its last reading within `window`, and the devices whose last
        reading says the plant is stopped (status stopped)."""
        key = "outlet" if measurement == "stack" else "station"
        rows = self.q.rows(f"SELECT * FROM {measurement} WHERE time > now() - {int(window.total_seconds())}s "
                           f"GROUP BY {key} ORDER BY time DESC LIMIT 1")
        seen = {str(r[key]): _time(r["time"]) for r in rows}
        stopped = {str(r[key]) for r in rows if r.get("status") == "stopped"}
        return seen, stopped

    def recent_values(self, measurement: str, fields: list[str], n: int,
                      window: timedelta) -> dict[tuple[str, str], list[float | None]]:
        """The last `n` readings of each field per device, oldest first."""
        key = "outlet" if measurement == "stack" else "station"
        cols = ", ".join(f'"{f}", "{f}_flag"' for f in fields)
        if measurement == "stack":
            cols += ', "status"'
        rows = self.q.rows(f"SELECT {cols} FROM {measurement} WHERE time > now() - {int(window.total_seconds())}s "
                           f"GROUP BY {key} ORDER BY time DESC LIMIT {n}")
        out: dict[tuple[str, str], list[float | None]] = {}
        for r in rows:
            # a plant that is not running, or a flagged value, legitimately repeats itself
            not_running = r.get("status") in ("stopped", "startup", "shutdown")
            for f in fields:
                flagged = r.get(f"{f}_flag") not in (None, "", "N")
                out.setdefault((str(r[key]), f), []).append(None if not_running or flagged else r.get(f))
        return {k: list(reversed(v)) for k, v in out.items() if any(x is not None for x in v)}


    def rollups_since(self, since: datetime) -> list[tuple[str, dict[str, Any]]]:
        """The aggregator's stored rollups since `since`, as (derived topic suffix, record),
        oldest first: what it published on aq/v1/derived/... (stack_hourly has no
        not-running minutes: a stopped hour reads as one with too few valid minutes)."""
        t = _ns(since)
        out: list[tuple[datetime, str, dict[str, Any]]] = []
        for r in self.q.rows(f'SELECT avg, avg_o2corr, "limit", limit_source, exceeded, valid_minutes FROM stack_hourly '
                             f"WHERE time > {t} GROUP BY outlet, pollutant"):
            when = _time(r["time"])
            out.append((when, f"stack/{r['outlet']}", {
                "outlet": r["outlet"], "pollutant": r["pollutant"], "time": when.astimezone(CHINA).isoformat(),
                "avg": r.get("avg"), "avg_o2corr": r.get("avg_o2corr"), "limit": r.get("limit"),
                "limit_source": r.get("limit_source"), "exceeded": r.get("exceeded"),
                "valid_minutes": r.get("valid_minutes") or 0}))
        for measurement, period in (("aqi_hourly", "hour"), ("aqi_daily", "day")):
            for r in self.q.rows(f"SELECT aqi, category FROM {measurement} WHERE time > {t} GROUP BY station, standard"):
                when = _time(r["time"])
                out.append((when, f"aqi/{r['station']}", {
                    "station": r["station"], "standard": r["standard"], "period": period,
                    "time": when.astimezone(CHINA).isoformat(), "aqi": r.get("aqi"), "category": r.get("category")}))
        out.sort(key=lambda x: x[0])
        return [(topic, rec) for _, topic, rec in out]
