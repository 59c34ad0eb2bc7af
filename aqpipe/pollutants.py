"""What each measurement may carry, in which canonical unit, and how other units convert.

Tables, not branches: adding a pollutant or a unit is adding a row.
"""

from __future__ import annotations

# Molar masses (g/mol) for ppb/ppm conversion (aqi.md, GB 3095-2012 2018 amendment).
MOLAR_MASS = {"so2": 64.07, "no2": 46.01, "o3": 48.00, "co": 28.01, "no": 30.01, "nox": 46.01}

# Molar volume (L/mol). Ambient: 25 °C, 1 atm (GB 3095-2012 amendment 2018).
# Stack emissions are reported at standard state 273.15 K, 101.325 kPa, dry (GB 13271-2014).
MOLAR_VOLUME = {"ambient": 24.465, "stack": 22.414}

# value name -> canonical unit. Concentration units are the ones the standards publish.
AMBIENT_FIELDS: dict[str, str] = {
    "pm25": "ug/m3", "pm10": "ug/m3", "pm1": "ug/m3", "tsp": "ug/m3",
    "so2": "ug/m3", "no2": "ug/m3", "no": "ug/m3", "nox": "ug/m3", "o3": "ug/m3",
    "co": "mg/m3",
    "temp": "degC", "rh": "%", "ws": "m/s", "wd": "deg", "pa": "hPa", "rain": "mm",
}
STACK_FIELDS: dict[str, str] = {
    "so2": "mg/m3", "nox": "mg/m3", "no": "mg/m3", "no2": "mg/m3", "pm": "mg/m3", "co": "mg/m3",
    "hg": "ug/m3",
    "o2": "%", "temp": "degC", "flow": "m3/h", "velocity": "m/s", "humidity": "%", "pressure": "kPa",
}
FIELDS = {"ambient": AMBIENT_FIELDS, "stack": STACK_FIELDS}

# Values that are concentrations: negative beyond sensor noise is rejected. Noise in the
# canonical unit: about the zero drift of a certified analyser. The defaults of
# ingest.negative_noise (ug/m3) and ingest.negative_noise_mg (mg/m3), which override them.
NEGATIVE_NOISE: dict[str, float] = {
    "ug/m3": 5.0,
    "mg/m3": 0.5,
}
# Non-concentration values that still cannot be negative.
NON_NEGATIVE = {"rh", "ws", "wd", "pa", "rain", "o2", "flow", "velocity", "humidity"}

# Spellings accepted in a payload's "units" map.
UNIT_ALIASES = {
    "ug/m3": "ug/m3", "µg/m³": "ug/m3", "μg/m³": "ug/m3", "µg/m3": "ug/m3", "ug/m³": "ug/m3",
    "mg/m3": "mg/m3", "mg/m³": "mg/m3",
    "ppb": "ppb", "ppm": "ppm",
}

# (declared, canonical) -> factor applied to the molar-mass conversion or plain scale.
# "molar" entries multiply by M / Vm; plain ones are pure scale factors.
_MASS_SCALE = {("ug/m3", "ug/m3"): 1.0, ("mg/m3", "mg/m3"): 1.0,
               ("mg/m3", "ug/m3"): 1000.0, ("ug/m3", "mg/m3"): 0.001}
_MOLAR_SCALE = {("ppb", "ug/m3"): 1.0, ("ppm", "ug/m3"): 1000.0,
                ("ppb", "mg/m3"): 0.001, ("ppm", "mg/m3"): 1.0}


class UnitError(ValueError):
    """A declared unit that cannot be converted to the canonical one."""


def conversion_factor(measurement: str, name: str, declared: str) -> float:
    """Multiplier taking `declared` units of `name` to its canonical unit."""
    canonical = FIELDS[measurement][name]
    unit = UNIT_ALIASES.get(declared.strip())
    if unit is None:
        raise UnitError(f"unknown unit {declared!r} for {name}; use one of ug/m3, mg/m3, ppb, ppm")
    if unit == canonical:
        return 1.0
    if (unit, canonical) in _MASS_SCALE:
        return _MASS_SCALE[(unit, canonical)]
    if (unit, canonical) in _MOLAR_SCALE and name in MOLAR_MASS:
        return _MOLAR_SCALE[(unit, canonical)] * MOLAR_MASS[name] / MOLAR_VOLUME[measurement]
    raise UnitError(f"{name} cannot be given in {declared!r} (canonical unit {canonical})")
