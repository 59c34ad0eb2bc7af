"""Station and outlet registries: data files beside the config.

`stations.toml` holds `[[station]]` tables, `outlets.toml` holds `[[outlet]]` tables.
A device that speaks HJ 212 is found by its `mn` (the data logger's id); its HJ 212
version, whether it encrypts (HJ 212-2025 SM4) and whether plain text is still allowed
are per entry. Its secrets (SM4 key, access password PW) are never in these files: a
file may name `hj212_secrets_file`, a TOML file beside it (`aqpipe.hj212_secrets`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aqpipe.errors import ConfigError
from aqpipe.hj212_secrets import Hj212Secrets, load_secrets

Hj212Version = Literal["2005", "2017", "2025"]
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
    hj212_version: Hj212Version | None = None  # pin the logger's protocol; None: as its Flag says
    hj212_encrypt: bool = False  # HJ 212-2025 SM4: its data commands must arrive encrypted
    hj212_allow_plaintext: bool = False  # while migrating: accept its plain frames too


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
    hj212_version: Hj212Version | None = None  # pin the logger's protocol; None: as its Flag says
    hj212_encrypt: bool = False  # HJ 212-2025 SM4: its data commands must arrive encrypted
    hj212_allow_plaintext: bool = False  # while migrating: accept its plain frames too

    @property
    def ref_o2(self) -> float:
        return self.reference_o2 if self.reference_o2 is not None else REFERENCE_O2[self.fuel]


class _StationsFile(BaseModel):
    hj212_secrets_file: str | None = None  # relative to this file's directory
    station: list[Station] = Field(default_factory=list)


class _OutletsFile(BaseModel):
    hj212_secrets_file: str | None = None
    outlet: list[Outlet] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Hj212Logger:
    """What the registry says about one HJ 212 logger (no secrets)."""

    version: Hj212Version | None
    encrypt: bool
    allow_plaintext: bool


class Registry:
    """Lookup of stations and outlets by id and by HJ 212 MN."""

    def __init__(self, stations: list[Station], outlets: list[Outlet], secrets: Hj212Secrets | None = None) -> None:
        _no_duplicates("station id", [s.id for s in stations])
        _no_duplicates("outlet id", [o.id for o in outlets])
        # One MN, one device: a second entry would silently take over the first one's data.
        _no_duplicates("mn", [d.mn for d in [*stations, *outlets] if d.mn])
        self.stations = {s.id: s for s in stations}
        self.outlets = {o.id: o for o in outlets}
        self._by_mn: dict[str, tuple[str, str]] = {}
        self._minute_s: dict[str, int] = {}
        self._loggers: dict[str, Hj212Logger] = {}
        for kind, devices in (("ambient", stations), ("stack", outlets)):
            for d in devices:
                if d.mn:
                    self._by_mn[d.mn] = (kind, d.id)
                    self._minute_s[d.mn] = d.minute_data_s
                    self._loggers[d.mn] = Hj212Logger(d.hj212_version, d.hj212_encrypt, d.hj212_allow_plaintext)
        self.secrets = secrets if secrets is not None else Hj212Secrets({}, {})
        # SM4 keys by MN, the mapping the HJ 212 decoder takes (repr shows no key).
        self.hj212_keys = self.secrets.keys

    @classmethod
    def empty(cls) -> "Registry":
        return cls([], [])

    @classmethod
    def load(cls, directory: Path) -> "Registry":
        """Read `stations.toml` and `outlets.toml` from `directory`; a missing file is an empty list."""
        stations_file = _load(directory / "stations.toml", _StationsFile)
        outlets_file = _load(directory / "outlets.toml", _OutletsFile)
        names = {n for n in (stations_file.hj212_secrets_file, outlets_file.hj212_secrets_file) if n}
        secrets = load_secrets([directory / n for n in sorted(names)])
        return cls(stations_file.station, outlets_file.outlet, secrets)

    def by_mn(self, mn: str) -> tuple[str, str] | None:
        """(measurement, identity) of the device with this HJ 212 MN, or None if unknown."""
        return self._by_mn.get(mn)

    def hj212_problems(self) -> list[str]:
        """HJ 212 loggers the secrets file does not cover (no values shown): their frames would
        all be refused by the gateway (no PW) or dead-lettered as hj212_decrypt (no key)."""
        problems = []
        for mn, logger in sorted(self._loggers.items()):
            where = f"{self._by_mn[mn][0]} {self._by_mn[mn][1]} (MN {mn})"
            if logger.encrypt and mn not in self.hj212_keys:
                problems.append(f"{where}: hj212_encrypt = true but no SM4 key in the secrets file")
            if self.secrets.pw(mn) is None:
                problems.append(f"{where}: no pw in the secrets file (the gateway refuses it while check_pw is on)")
        return problems

    def hj212_logger(self, mn: str) -> Hj212Logger | None:
        """Version pin and encryption policy of this logger, or None for an unknown MN."""
        return self._loggers.get(mn)

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
