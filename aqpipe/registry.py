"""Station and outlet registries: data files beside the config.

`stations.toml` holds `[[station]]` tables, `outlets.toml` holds `[[outlet]]` tables.
A device that speaks HJ 212 is found by its `mn` (the data logger's id).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aqpipe.errors import ConfigError

Fuel = Literal["coal", "oil", "gas"]
BoilerTable = Literal["in_service", "new", "special"]

# GB 13271-2014 reference O2 (%) by fuel: coal 9, oil and gas 3.5.
REFERENCE_O2 = {"coal": 9.0, "oil": 3.5, "gas": 3.5}


class Station(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str = ""
    district: str = ""
    lat: float | None = None
    lon: float | None = None
    mn: str | None = None
    minute_data_s: int = Field(60, gt=0)  # the HJ 212 logger's minute-data (2051) interval


class Outlet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    enterprise: str = ""
    permit: str = ""  # 排污许可证编号
    boiler: BoilerTable = "new"  # which GB 13271-2014 table applies (1 in service, 2 new, 3 special)
    fuel: Fuel = "coal"
    reference_o2: float | None = None  # defaults from fuel
    special_zone: bool = False
    province_sw: bool = False  # Guangxi, Chongqing, Sichuan, Guizhou: SO2 550 for coal boilers in service
    limits: dict[str, float] = Field(default_factory=dict)  # permit limits, mg/m³, override the standard
    mn: str | None = None
    minute_data_s: int = Field(60, gt=0)  # the HJ 212 logger's minute-data (2051) interval

    @property
    def ref_o2(self) -> float:
        return self.reference_o2 if self.reference_o2 is not None else REFERENCE_O2[self.fuel]


class _StationsFile(BaseModel):
    station: list[Station] = Field(default_factory=list)


class _OutletsFile(BaseModel):
    outlet: list[Outlet] = Field(default_factory=list)


class Registry:
    """Lookup of stations and outlets by id and by HJ 212 MN."""

    def __init__(self, stations: list[Station], outlets: list[Outlet]) -> None:
        _no_duplicates("station id", [s.id for s in stations])
        _no_duplicates("outlet id", [o.id for o in outlets])
        # One MN, one device: a second entry would silently take over the first one's data.
        _no_duplicates("mn", [d.mn for d in [*stations, *outlets] if d.mn])
        self.stations = {s.id: s for s in stations}
        self.outlets = {o.id: o for o in outlets}
        self._by_mn: dict[str, tuple[str, str]] = {}
        self._minute_s: dict[str, int] = {}
        for s in stations:
            if s.mn:
                self._by_mn[s.mn] = ("ambient", s.id)
                self._minute_s[s.mn] = s.minute_data_s
        for o in outlets:
            if o.mn:
                self._by_mn[o.mn] = ("stack", o.id)
                self._minute_s[o.mn] = o.minute_data_s

    @classmethod
    def empty(cls) -> "Registry":
        return cls([], [])

    @classmethod
    def load(cls, directory: Path) -> "Registry":
        """Read `stations.toml` and `outlets.toml` from `directory`; a missing file is an empty list."""
        stations = _load(directory / "stations.toml", _StationsFile).station
        outlets = _load(directory / "outlets.toml", _OutletsFile).outlet
        return cls(stations, outlets)

    def by_mn(self, mn: str) -> tuple[str, str] | None:
        """(measurement, identity) of the device with this HJ 212 MN, or None if unknown."""
        return self._by_mn.get(mn)

    def minute_data_s(self, mn: str) -> int:
        """Seconds covered by one minute-data (CN 2051) frame of this logger (default 60)."""
        return self._minute_s.get(mn, 60)


def _no_duplicates(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"registry {what}", f"{v!r} appears twice in stations.toml/outlets.toml")
        seen.add(v)


def _load(path: Path, model: type[BaseModel]):
    if not path.exists():
        return model()
    try:
        with path.open("rb") as f:
            return model.model_validate(tomllib.load(f))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}:{where}", first["msg"]) from e
