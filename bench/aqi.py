"""Benchmark: station-hours per second, aqpipe (vectorised numpy) vs python-aqi (one by one).

Run: .venv/bin/python bench/aqi.py [--n 1000000] [--sample 20000]

Both compute the US EPA AQI of the same random station-hours (PM2.5, PM10, 8-h O3, CO,
SO2, NO2). python-aqi works one station-hour at a time in Decimal; it is timed on a random
sample of `--sample` rows and its rate extrapolated to N (stated in the output).

Agreement is checked only where python-aqi implements the same table (aqi.md: PM10, CO,
SO2, NO2 — its PM2.5 and O3 tables predate 2024 / 2015), and only up to AQI 300: above, the
2024 TAD merges 301-400 and 401-500 into one row, python-aqi keeps two, and for SO2 above
304 ppb the TAD switches to the 24-h average. python-aqi rounds half to even where the TAD
rounds half up, so exact .5 ties are counted separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import numpy as np

# This file is named aqi.py: drop its own folder from the path so `import aqi` finds the
# PyPI package, and put the repository root on it for `aggregator`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from aggregator.aqi import compute_aqi  # noqa: E402
from aggregator.tables import US_2024  # noqa: E402

try:
    import aqi as python_aqi  # PyPI python-aqi 0.6.1
except ImportError:  # pragma: no cover
    sys.exit("pip install python-aqi==0.6.1 first")

# (our input, python-aqi pollutant, generated range, decimals, agreement range with AQI ≤ 300)
POLLUTANTS = [
    ("pm25", python_aqi.POLLUTANT_PM25, (0.0, 300.0), 2, None),
    ("pm10", python_aqi.POLLUTANT_PM10, (0.0, 500.0), 1, (0, 424)),
    ("o3_8h", python_aqi.POLLUTANT_O3_8H, (0.0, 0.2), 4, None),
    ("co", python_aqi.POLLUTANT_CO_8H, (0.0, 35.0), 2, (0.0, 30.4)),
    ("so2", python_aqi.POLLUTANT_SO2_1H, (0.0, 300.0), 1, (0, 304)),
    ("no2", python_aqi.POLLUTANT_NO2_1H, (0.0, 1300.0), 1, (0, 1249)),
]


def _inputs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: np.round(rng.uniform(lo, hi, n), dec) for name, _, (lo, hi), dec, _ in POLLUTANTS}


def _python_aqi_row(values: dict[str, np.ndarray], i: int) -> int:
    ccs = [(p, repr(float(values[name][i]))) for name, p, *_ in POLLUTANTS]
    return int(python_aqi.to_aqi(ccs, algo=python_aqi.ALGO_EPA))


def _is_half_tie(name: str, conc: float) -> bool:
    """True when the TAD formula lands exactly on .5 (half-up vs python-aqi's half-even)."""
    table = US_2024.tables[{"pm10": "pm10_24h", "co": "co_8h", "so2": "so2_1h", "no2": "no2_1h"}[name]]
    c = Decimal(repr(conc)).quantize(Decimal(1) / table.scale, rounding=ROUND_DOWN) * table.scale
    for lo, hi, ilo, ihi in table.segments:
        if lo <= c <= hi:
            x = Decimal(ihi - ilo) * (c - lo) / (hi - lo) + ilo
            return x - x.to_integral_value(rounding=ROUND_DOWN) == Decimal("0.5")
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="station-hours (default 1,000,000)")
    ap.add_argument("--sample", type=int, default=20_000, help="rows timed through python-aqi")
    ap.add_argument("--seed", type=int, default=20240207)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    values = _inputs(args.n, rng)

    compute_aqi(US_2024, "hour", {k: v[:1000] for k, v in values.items()})  # warm up
    t0 = time.perf_counter()
    res = compute_aqi(US_2024, "hour", values)
    t_ours = time.perf_counter() - t0
    ours_rate = args.n / t_ours

    sample = rng.choice(args.n, size=min(args.sample, args.n), replace=False)
    t0 = time.perf_counter()
    theirs = [_python_aqi_row(values, int(i)) for i in sample]
    t_theirs = time.perf_counter() - t0
    theirs_rate = len(sample) / t_theirs

    print(f"aqpipe (numpy, vectorised):  {args.n:>9,} station-hours in {t_ours:6.3f} s = {ours_rate:>12,.0f} /s")
    print(f"python-aqi 0.6.1 (one by one): {len(sample):>7,} sampled station-hours in {t_theirs:6.3f} s "
          f"= {theirs_rate:>12,.0f} /s (extrapolated to {args.n:,}: {args.n / theirs_rate:,.1f} s)")
    print(f"ratio: {ours_rate / theirs_rate:,.0f}x  (target >= 100x)")
    del theirs  # the overall AQI differs by design (python-aqi's PM2.5 / O3 tables are old)

    # Agreement per pollutant on tables both implement identically, AQI <= 300.
    print("agreement on unchanged tables (python-aqi vs aqpipe, AQI <= 300):")
    all_ok = True
    for name, p, _, _, agree in POLLUTANTS:
        if agree is None:
            continue
        lo, hi = agree
        rows = [int(i) for i in sample if lo <= values[name][i] <= hi]
        same = ties = other = 0
        for i in rows:
            conc = float(values[name][i])
            theirs_i = int(python_aqi.to_iaqi(p, repr(conc), algo=python_aqi.ALGO_EPA))
            ours_i = int(res.iaqi[name][i])
            if theirs_i == ours_i:
                same += 1
            elif _is_half_tie(name, conc) and ours_i == theirs_i + 1:
                ties += 1
            else:
                other += 1
        all_ok &= other == 0
        print(f"  {name:5s}: {same:>6}/{len(rows)} identical, {ties} exact .5 ties (TAD half-up vs "
              f"python-aqi half-even), {other} other differences")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
