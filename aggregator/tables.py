"""AQI standards as data: breakpoint tables, special rules, categories, versions in force.

Adding a standard (or correcting a number) is editing a table here; `aggregator.aqi`
reads these with one generic function and has no standard-specific branches.

Sources (the authority for every number; see /work/shared/domain/aqi.md):
- HJ 633-2012 环境空气质量指数（AQI）技术规定（试行）, Table 1 (breakpoints), 5.x and
  Appendix A (categories and colours).
- HJ 633-2026 / GB 3095-2026, issued by the Ministry of Ecology and Environment (MEE) on
  2026-02-24, in force from 2026-03-01 (MEE notice and press reports: transition phase
  2026-03-01..2030-12-31 with PM2.5 24-h grade II limit 60 µg/m³, final limits from
  2031-01-01 with 50 µg/m³). We could NOT read the MEE PDF itself here; see `CN_2026_*`
  below for which numbers are verified against what.
- US EPA, Technical Assistance Document for the Reporting of Daily Air Quality (AQI),
  with the February 2024 PM2.5 revision (Table 6 as summarised in aqi.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Literal, Mapping

from aqpipe import hj633

Period = Literal["hour", "day"]
ConcRounding = Literal["half_even", "truncate"]
IndexRounding = Literal["ceil", "half_up"]
AboveTop = Literal["cap", "extrapolate"]

CHINA_TZ = timezone(timedelta(hours=8))


class UnknownStandard(KeyError):
    """A standard / version / phase name that no table is registered for."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown standard {name!r}; known: {', '.join(known)}")
        self.name = name
        self.known = known


@dataclass(frozen=True)
class Table:
    """One breakpoint column: piecewise-linear segments from concentration to index.

    Concentrations are held as integers in units of 1/`scale` of `unit` (e.g. PM2.5 for
    the US at scale 10 = tenths of µg/m³): the standard's own precision, which makes the
    interpolation exact integer arithmetic with no float tolerance anywhere.
    """

    name: str  # e.g. "pm25_24h"
    unit: str  # "ug/m3" | "mg/m3" | "ppm" | "ppb"
    scale: int  # 1/scale is the published precision of the concentration
    conc_rounding: ConcRounding  # how a measured value is brought to that precision
    index_rounding: IndexRounding  # how the interpolated index becomes an integer
    above_top: AboveTop  # concentration above the last breakpoint
    segments: tuple[tuple[int, int, int, int], ...]  # (c_lo, c_hi, i_lo, i_hi), scaled ints
    source: str

    @property
    def top(self) -> int:
        return self.segments[-1][1]

    @property
    def bottom(self) -> int:
        return self.segments[0][0]


def _scaled(value: str, scale: int) -> int:
    scaled = Decimal(value) * scale
    if scaled != scaled.to_integral_value():
        raise ValueError(f"breakpoint {value} is finer than 1/{scale}")
    return int(scaled)


def _continuous(name: str, unit: str, scale: int, conc: tuple[str, ...], index: tuple[int, ...], source: str,
                ) -> Table:
    """A HJ 633 column: continuous segments (a breakpoint belongs to both sides, same IAQI)."""
    segs = tuple(
        (_scaled(conc[k], scale), _scaled(conc[k + 1], scale), index[k], index[k + 1])
        for k in range(len(conc) - 1)
    )
    # HJ 633: concentrations rounded to published precision (修约, GB/T 8170 rounds half to
    # even), IAQI carried up to the next integer (进位取整); above the last row the
    # standard gives nothing, we cap at the last index (500) rather than invent one.
    return Table(name, unit, scale, "half_even", "ceil", "cap", segs, source)


def _discrete(name: str, unit: str, scale: int, rows: tuple[tuple[str, str, int, int], ...], source: str,
              ) -> Table:
    """An EPA column: discontinuous rows (9.0 | 9.1), concentrations truncated first."""
    segs = tuple((_scaled(lo, scale), _scaled(hi, scale), ilo, ihi) for lo, hi, ilo, ihi in rows)
    # TAD: truncate, interpolate, round to nearest integer; above the top row the TAD lets
    # the last row's equation run on (AQI > 500 is reported as "beyond the AQI").
    return Table(name, unit, scale, "truncate", "half_up", "extrapolate", segs, source)


# ---------------------------------------------------------------------------------------
# China, HJ 633-2012 Table 1 (µg/m³, CO mg/m³). Concentration precision: integer µg/m³,
# CO 0.1 mg/m³ (as published by CNEMC; HJ 663 data rounding).
_HJ2012 = "HJ 633-2012 Table 1"
_I8 = (0, 50, 100, 150, 200, 300, 400, 500)
_I5 = (0, 50, 100, 150, 200)
_I6 = (0, 50, 100, 150, 200, 300)

CN_2012_TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _continuous("so2_24h", "ug/m3", 1, ("0", "50", "150", "475", "800", "1600", "2100", "2620"), _I8, _HJ2012),
        # SO2 1-h stops at 800 (IAQI 200); above: rule below.
        _continuous("so2_1h", "ug/m3", 1, ("0", "150", "500", "650", "800"), _I5, _HJ2012),
        _continuous("no2_24h", "ug/m3", 1, ("0", "40", "80", "180", "280", "565", "750", "940"), _I8, _HJ2012),
        _continuous("no2_1h", "ug/m3", 1, ("0", "100", "200", "700", "1200", "2340", "3090", "3840"), _I8, _HJ2012),
        _continuous("pm10_24h", "ug/m3", 1, ("0", "50", "150", "250", "350", "420", "500", "600"), _I8, _HJ2012),
        _continuous("co_24h", "mg/m3", 10, ("0", "2", "4", "14", "24", "36", "48", "60"), _I8, _HJ2012),
        _continuous("co_1h", "mg/m3", 10, ("0", "5", "10", "35", "60", "90", "120", "150"), _I8, _HJ2012),
        _continuous("o3_1h", "ug/m3", 1, ("0", "160", "200", "300", "400", "800", "1000", "1200"), _I8, _HJ2012),
        # O3 8-h stops at 800 (IAQI 300); above: rule below.
        _continuous("o3_8h", "ug/m3", 1, ("0", "100", "160", "215", "265", "800"), _I6, _HJ2012),
        _continuous("pm25_24h", "ug/m3", 1, ("0", "35", "75", "115", "150", "250", "350", "500"), _I8, _HJ2012),
    )
}

# ---------------------------------------------------------------------------------------
# China, HJ 633-2026 Table 3.
# VERIFIED (against what we could reach, not the MEE PDF itself):
# - Effective date 2026-03-01 and the two phases (to 2030-12-31 / from 2031-01-01): MEE
#   press release of 2026-02-24 as reported by Xinhua / cinic.org.cn (2026-03-03).
# - PM2.5 IAQI-100 breakpoint 60 and PM10 120, all other PM rows unchanged from 2012: four
#   independent public implementations that cite "正式文本表 3" / the MEE PDF
#   (W020260225366493492011.pdf) agree (a Python tool whose tests say they follow Table 3,
#   formulas (1)(2), 4.2.6, 4.3.1, 5.3.1; a MoonBit library: "PM10 and PM2.5 columns
#   tightened at the 100 step, from 150 and 75 to 120 and 60"; caiyunapp/aqi-hub src/cn.rs;
#   a device-rating spec citing 正式全文 §4.2, 表 1, 表 3).
# - SO2 1-h > 800 → IAQI 200 and O3 8-h > 800 → IAQI 300: same sources and aqi.md.
# - Gas columns (SO2, NO2, CO, O3) unchanged from 2012: same sources; the MEE release names
#   only the PM2.5 and PM10 columns as updated ("更新了AQI中PM2.5和PM10的分级浓度限值").
# UNVERIFIED:
# - Whether Table 3 changes in the final phase (from 2031). aqi.md reports one
#   implementation using 50 µg/m³ at IAQI 100 for the final phase; none of the sources
#   above shows a phase-dependent Table 3 (HJ 633-2026 names one table, whose PM2.5
#   IAQI-100 value equals the transition-phase 24-h limit). We therefore carry the same
#   numbers in the final phase and keep the phase as data: if the text shows a final-phase
#   column, edit `_CN_2026_FINAL_PM25` only.
_HJ2026 = "HJ 633-2026 Table 3 (as transcribed by public implementations citing the MEE text)"
_CN_2026_TRANSITION_PM25 = ("0", "35", "60", "115", "150", "250", "350", "500")
_CN_2026_FINAL_PM25 = _CN_2026_TRANSITION_PM25  # UNVERIFIED: see above
_CN_2026_PM10 = ("0", "50", "120", "250", "350", "420", "500", "600")


def _cn_2026_tables(pm25: tuple[str, ...], note: str) -> dict[str, Table]:
    tables = {name: t for name, t in CN_2012_TABLES.items() if name not in ("pm25_24h", "pm10_24h")}
    tables["pm25_24h"] = _continuous("pm25_24h", "ug/m3", 1, pm25, _I8, f"{_HJ2026}; {note}")
    tables["pm10_24h"] = _continuous("pm10_24h", "ug/m3", 1, _CN_2026_PM10, _I8, _HJ2026)
    return tables


# ---------------------------------------------------------------------------------------
# US EPA 2024 (TAD Table 6 with the 2024 PM2.5 rows). Units: PM µg/m³, O3 and CO ppm,
# SO2 and NO2 ppb. Truncation: PM2.5 0.1, PM10 1, O3 0.001, CO 0.1, SO2 and NO2 1.
_TAD = "EPA AQI TAD (2024 PM2.5 revision) Table 6"
US_2024_TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _discrete("pm25_24h", "ug/m3", 10, (
            ("0.0", "9.0", 0, 50), ("9.1", "35.4", 51, 100), ("35.5", "55.4", 101, 150),
            ("55.5", "125.4", 151, 200), ("125.5", "225.4", 201, 300), ("225.5", "325.4", 301, 500)), _TAD),
        _discrete("pm10_24h", "ug/m3", 1, (
            ("0", "54", 0, 50), ("55", "154", 51, 100), ("155", "254", 101, 150),
            ("255", "354", 151, 200), ("355", "424", 201, 300), ("425", "604", 301, 500)), _TAD),
        # 8-h O3 stops at 0.200 ppm; above it the 1-h value decides (rule below).
        _discrete("o3_8h", "ppm", 1000, (
            ("0.000", "0.054", 0, 50), ("0.055", "0.070", 51, 100), ("0.071", "0.085", 101, 150),
            ("0.086", "0.105", 151, 200), ("0.106", "0.200", 201, 300)), _TAD),
        # 1-h O3 starts at 0.125 ppm: below it there is no 1-h index at all.
        _discrete("o3_1h", "ppm", 1000, (
            ("0.125", "0.164", 101, 150), ("0.165", "0.204", 151, 200),
            ("0.205", "0.404", 201, 300), ("0.405", "0.604", 301, 500)), _TAD),
        _discrete("co_8h", "ppm", 10, (
            ("0.0", "4.4", 0, 50), ("4.5", "9.4", 51, 100), ("9.5", "12.4", 101, 150),
            ("12.5", "15.4", 151, 200), ("15.5", "30.4", 201, 300), ("30.5", "50.4", 301, 500)), _TAD),
        # 1-h SO2 stops at 304 ppb (AQI 200); above, the 24-h average decides (rule below).
        _discrete("so2_1h", "ppb", 1, (
            ("0", "35", 0, 50), ("36", "75", 51, 100), ("76", "185", 101, 150), ("186", "304", 151, 200)), _TAD),
        _discrete("so2_24h", "ppb", 1, (("305", "604", 201, 300), ("605", "1004", 301, 500)), _TAD),
        _discrete("no2_1h", "ppb", 1, (
            ("0", "53", 0, 50), ("54", "100", 51, 100), ("101", "360", 101, 150),
            ("361", "649", 151, 200), ("650", "1249", 201, 300), ("1250", "2049", 301, 500)), _TAD),
    )
}


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AboveRule:
    """When an input's concentration on `table` is above `above`, its index comes from elsewhere.

    Either a fixed index (`fixed`), or another input (`use_input`) judged on another
    table (`use_table`); `at_least` bounds the latter from below when that input is valid
    but below its table (EPA SO2: a 1-h value above 304 ppb already means AQI ≥ 200 —
    our reading of the TAD, which defines indices ≥ 201 from the 24-h value only).
    """

    table: str
    above: str  # in the table's unit, compared at the table's precision
    fixed: int | None = None
    use_input: str | None = None
    use_table: str | None = None
    at_least: int | None = None
    source: str = ""


@dataclass(frozen=True)
class Category:
    level: int  # 1..6
    upper: int  # highest index in this category (the last one open-ended)
    name: str
    rgb: tuple[int, int, int]


# HJ 633-2012 Table 2 and Appendix A, unchanged in 2026: the one table in aqpipe.hj633
# (the public pages show its names, colours and advice), its bands here.
CN_CATEGORIES = tuple(Category(c.level, c.upper if c.upper is not None else 10**9, c.name, c.rgb)
                      for c in hj633.CATEGORIES)
US_CATEGORIES = (  # TAD Table 2; purple differs from China's
    Category(1, 50, "Good", (0, 228, 0)),
    Category(2, 100, "Moderate", (255, 255, 0)),
    Category(3, 150, "Unhealthy for Sensitive Groups", (255, 126, 0)),
    Category(4, 200, "Unhealthy", (255, 0, 0)),
    Category(5, 300, "Very Unhealthy", (143, 63, 151)),
    Category(6, 10**9, "Hazardous", (126, 0, 35)),
)

# Which table each input is judged on, per period. Input names are the CLI's and the
# service's: `o3` is a 1-hour value (CN day: the daily max 1-h), `o3_8h` an 8-hour moving
# average (CN day: the daily max 8-h); `so2_24h` only feeds the SO2 rule.
_CN_INPUTS: dict[str, dict[str, str]] = {
    # 实时报: gases on 1-h tables; PM has no 1-h table → its hourly value on the 24-h table.
    "hour": {"so2": "so2_1h", "no2": "no2_1h", "co": "co_1h", "o3": "o3_1h", "o3_8h": "o3_8h",
             "pm10": "pm10_24h", "pm25": "pm25_24h"},
    # 日报: 24-h averages; O3 daily max 1-h on the 1-h table, daily max 8-h on the 8-h table.
    "day": {"so2": "so2_24h", "no2": "no2_24h", "co": "co_24h", "o3": "o3_1h", "o3_8h": "o3_8h",
            "pm10": "pm10_24h", "pm25": "pm25_24h"},
}
# US: the same inputs for both periods; `pm25`/`pm10` are 24-h averages (or a NowCast for
# the hour), `o3_8h` the 8-h average, `o3` the 1-h value, `co` the 8-h average, `so2` and
# `no2` 1-h values (for a day: the daily max 1-h), `so2_24h` the 24-h average (SO2 rule).
_US_INPUTS = {"pm25": "pm25_24h", "pm10": "pm10_24h", "o3_8h": "o3_8h", "o3": "o3_1h",
              "co": "co_8h", "so2": "so2_1h", "no2": "no2_1h"}

# Auxiliary inputs: accepted, used by rules, never given an index of their own.
AUX_INPUTS = frozenset({"so2_24h"})
ALL_INPUTS = ("pm25", "pm10", "so2", "no2", "co", "o3", "o3_8h", "so2_24h")

# The pollutant an input reports as (primary / exceeding lists): O3 is `o3` whichever
# averaging period decided it.
REPORT_NAME = {"o3_8h": "o3", "so2_24h": "so2"}
REPORT_ORDER = ("pm25", "pm10", "so2", "no2", "co", "o3")

# Molecule of each input, for unit conversion (aqi.md: M in g/mol, 25 °C, 1 atm).
MOLECULE = {"pm25": "pm", "pm10": "pm", "so2": "so2", "so2_24h": "so2", "no2": "no2",
            "co": "co", "o3": "o3", "o3_8h": "o3"}
MOLAR_MASS = {"so2": 64.07, "no2": 46.01, "o3": 48.00, "co": 28.01}
MOLAR_VOLUME_25C = 24.465  # L/mol at 25 °C, 101.325 kPa (GB 3095-2012 amendment 2018 reference)


@dataclass(frozen=True)
class Standard:
    """Everything a standard (one version, one phase) needs to turn averages into an AQI."""

    key: str  # the `standard` tag in InfluxDB: "cn-2012" | "cn-2026" | "us"
    family: Literal["cn", "us"]
    version: str
    phase: str  # "" when the standard has a single phase
    tables: Mapping[str, Table]
    inputs: Mapping[str, Mapping[str, str]]  # period -> input -> table name
    rules: tuple[AboveRule, ...]
    categories: tuple[Category, ...]
    exceeding_above: int | None  # IAQI above which a pollutant is 超标 (2012 only)
    primary_above: int = 50  # a primary pollutant is named only when AQI is above this
    units: Mapping[str, str] = field(default_factory=dict)  # input -> the standard's unit
    source: str = ""


_CN_UNITS = {"pm25": "ug/m3", "pm10": "ug/m3", "so2": "ug/m3", "so2_24h": "ug/m3", "no2": "ug/m3",
             "co": "mg/m3", "o3": "ug/m3", "o3_8h": "ug/m3"}
_US_UNITS = {"pm25": "ug/m3", "pm10": "ug/m3", "so2": "ppb", "so2_24h": "ppb", "no2": "ppb",
             "co": "ppm", "o3": "ppm", "o3_8h": "ppm"}

CN_2012 = Standard(
    key="cn-2012", family="cn", version="2012", phase="", tables=CN_2012_TABLES, inputs=_CN_INPUTS,
    rules=(
        # Table 1 note (1): SO2 1-h above 800 is not indexed from the 1-h value; use the 24-h.
        AboveRule("so2_1h", "800", use_input="so2_24h", use_table="so2_24h", source=_HJ2012 + " note 1"),
        # Table 1 note (2): O3 8-h above 800 is not indexed from the 8-h value; use the 1-h.
        AboveRule("o3_8h", "800", use_input="o3", use_table="o3_1h", source=_HJ2012 + " note 2"),
    ),
    categories=CN_CATEGORIES, exceeding_above=100, units=_CN_UNITS, source=_HJ2012,
)

_CN_2026_RULES = (
    AboveRule("so2_1h", "800", fixed=200, source=_HJ2026 + " note: SO2 1-h > 800 counts as 200"),
    AboveRule("o3_8h", "800", fixed=300, source=_HJ2026 + " note: O3 8-h > 800 counts as 300"),
)
CN_2026_TRANSITION = Standard(
    key="cn-2026", family="cn", version="2026", phase="transition",
    tables=_cn_2026_tables(_CN_2026_TRANSITION_PM25, "transition phase 2026-03-01..2030-12-31"),
    inputs=_CN_INPUTS, rules=_CN_2026_RULES, categories=CN_CATEGORIES,
    exceeding_above=None,  # 2026 drops 超标污染物
    units=_CN_UNITS, source=_HJ2026,
)
CN_2026_FINAL = Standard(
    key="cn-2026", family="cn", version="2026", phase="final",
    tables=_cn_2026_tables(_CN_2026_FINAL_PM25, "final phase from 2031-01-01, PM2.5 column UNVERIFIED"),
    inputs=_CN_INPUTS, rules=_CN_2026_RULES, categories=CN_CATEGORIES, exceeding_above=None,
    units=_CN_UNITS, source=_HJ2026,
)
US_2024 = Standard(
    key="us", family="us", version="2024", phase="", tables=US_2024_TABLES,
    inputs={"hour": _US_INPUTS, "day": _US_INPUTS},
    rules=(
        AboveRule("o3_8h", "0.200", use_input="o3", use_table="o3_1h", source=_TAD + ": 8-h O3 above 0.200 ppm"),
        AboveRule("so2_1h", "304", use_input="so2_24h", use_table="so2_24h", at_least=200,
                  source=_TAD + ": 1-h SO2 above 304 ppb"),
    ),
    categories=US_CATEGORIES, exceeding_above=None, units=_US_UNITS, source=_TAD,
)

# ---------------------------------------------------------------------------------------
# Versions in force. GB 3095-2026 / HJ 633-2026: in force 2026-03-01 (China local date);
# the final phase of GB 3095-2026 starts 2031-01-01.
CN_2026_EFFECTIVE = date(2026, 3, 1)
CN_2026_FINAL_FROM = date(2031, 1, 1)

_BY_NAME: dict[str, Standard] = {
    "cn-2012": CN_2012,
    "cn-2026": CN_2026_TRANSITION,
    "cn-2026-transition": CN_2026_TRANSITION,
    "cn-2026-final": CN_2026_FINAL,
    "us": US_2024,
    "us-2024": US_2024,
}


def get_standard(name: str) -> Standard:
    """The standard registered under `name` (`cn-2012`, `cn-2026[-transition|-final]`, `us`)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownStandard(name, sorted(_BY_NAME)) from None


def cn_standard_in_force(when: datetime | date, effective: date = CN_2026_EFFECTIVE,
                         final_from: date = CN_2026_FINAL_FROM) -> Standard:
    """The Chinese standard (version and phase) in force at `when`.

    `when` is the start of the averaging period; an aware datetime is judged by its date in
    China (UTC+8), a naive one is refused (ambiguous), a `date` is taken as a China date.
    """
    if isinstance(when, datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("naive datetime: give a timezone (the effective date is a China date)")
        day = when.astimezone(CHINA_TZ).date()
    else:
        day = when
    if day < effective:
        return CN_2012
    return CN_2026_FINAL if day >= final_from else CN_2026_TRANSITION
