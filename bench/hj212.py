"""HJ 212 decode throughput: frames/s for a typical 10-pollutant minute frame, vs the target.

Run: .venv/bin/python bench/hj212.py    (about 10 s)

Measures `decode` (UTF-8 check, split, length, CRC, parse, map to readings) on
  - typical: coal-boiler minute frame (CN 2051), 10 codes, Avg + Flag, ZsAvg for
    the 4 pollutants (~500 bytes, 24 values) - what loggers usually send;
  - full: the same 10 codes with every suffix (Min/Avg/Max, Zs*, Cou; ~1 KB, 64 values),
and, as a baseline in the same run, the bit-by-bit CRC loop of the standard alone
on the typical frame's data segment. Best of several repeats (a shared machine is noisy).
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.decoders.hj212 import build_frame, crc16_hj212, crc16_hj212_bitwise, decode  # noqa: E402
from ingest.registry import Outlet, Registry  # noqa: E402

TARGET = 20_000  # frames per second
MN = "91320500MA1X2Y3Z4W000001"
REGISTRY = Registry([], [Outlet(id="320500-0001-DA001", mn=MN)])
POLLUTANTS = [("a21026", 28.4, 41.2), ("a21002", 36.1, 52.7), ("a34013", 3.2, 4.7), ("a21005", 12.0, 17.5)]
OTHERS = [("a19001", 12.3), ("a01012", 128.5), ("a01013", -0.35), ("a01011", 11.2), ("a01014", 8.6), ("a00000", 65432.1)]
HEAD = f"QN=20261124140500123;ST=31;CN=2051;PW=123456;MN={MN};Flag=5;CP=&&DataTime=20261124140500;"


def typical() -> bytes:
    groups = [f"{c}-Avg={a},{c}-ZsAvg={z},{c}-Flag=N" for c, a, z in POLLUTANTS]
    groups += [f"{c}-Avg={a},{c}-Flag=N" for c, a in OTHERS]
    return build_frame(HEAD + ";".join(groups) + "&&").encode()


def full() -> bytes:
    groups = [
        f"{c}-Min={a - 3},{c}-Avg={a},{c}-Max={a + 4},{c}-ZsMin={z - 4},{c}-ZsAvg={z},{c}-ZsMax={z + 6},{c}-Cou=1.85,{c}-Flag=N"
        for c, a, z in POLLUTANTS
    ]
    groups += [f"{c}-Min={a},{c}-Avg={a},{c}-Max={a},{c}-Flag=N" for c, a in OTHERS]
    return build_frame(HEAD + ";".join(groups) + "&&").encode()


def rate(fn, number: int, repeat: int = 5) -> float:
    return number / min(timeit.repeat(fn, number=number, repeat=repeat))


def main() -> None:
    results = {}
    for name, payload in (("typical", typical()), ("full", full())):
        assert len(decode(payload, MN, REGISTRY)) == 1
        results[name] = (len(payload), rate(lambda: decode(payload, MN, REGISTRY), 20_000))
    segment = typical()[6:-6]
    fast_crc = rate(lambda: crc16_hj212(segment), 50_000)
    slow_crc = rate(lambda: crc16_hj212_bitwise(segment), 300, repeat=3)

    for name, (size, per_s) in results.items():
        print(f"decode {name:8s} {size:5d} B  {per_s:10,.0f} frames/s  {per_s / TARGET:5.2f}x target ({TARGET:,}/s)")
    print(f"CRC only, folded table   {len(segment):5d} B  {fast_crc:10,.0f} /s")
    print(f"CRC only, bit by bit     {len(segment):5d} B  {slow_crc:10,.0f} /s  (folded is {fast_crc / slow_crc:,.0f}x faster;"
          f" bit-by-bit alone allows {slow_crc / TARGET:.2f}x target)")


if __name__ == "__main__":
    main()
