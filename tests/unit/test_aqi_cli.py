"""`aqpipe aqi`: JSON lines in, one JSON line out per line, in order."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.aqi_cli import process_lines, register, run

CASES = [json.loads(line) for line in (Path(__file__).parents[1] / "data" / "aqi" / "cli_cases.jsonl").read_text().splitlines()]
KEYS = ["aqi", "category", "category_name", "primary", "exceeding", "iaqi"]


@pytest.mark.parametrize("case", CASES, ids=[json.dumps(c["in"], ensure_ascii=False)[:70] for c in CASES])
def test_cli_line_gives_the_expected_record(case):
    [out] = process_lines([json.dumps(case["in"])])
    if case.get("error"):
        assert set(out) == {"error"} and isinstance(out["error"], str) and out["error"]
    else:
        assert out == case["out"]
        assert list(out)[:6] == KEYS


def _cli(lines: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="aqpipe")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["aqi"])
    out = io.StringIO()
    assert args.func(args, stdin=io.StringIO("".join(l + "\n" for l in lines)), stdout=out) == 0
    return [json.loads(l) for l in out.getvalue().splitlines()]


def test_cli_prints_one_line_per_input_line_in_order_and_goes_on_after_a_bad_line():
    lines = [json.dumps(c["in"]) for c in CASES] + ["not json", "[1]", ""]
    outs = _cli(lines)
    assert len(outs) == len(lines)
    for case, out in zip(CASES, outs):
        assert ("error" in out) == bool(case.get("error"))
    assert all("error" in o for o in outs[-3:])


def test_cli_batches_mixed_standards_without_reordering():
    lines = []
    for k in range(300):
        lines.append(json.dumps({"standard": "cn", "period": "day", "values": {"pm25": k}}))
        lines.append(json.dumps({"standard": "us", "period": "day", "values": {"pm10": k}}))
    outs = _cli(lines)
    for k in range(300):
        assert outs[2 * k]["iaqi"].get("pm25") is not None and "pm10" not in outs[2 * k]["iaqi"]
        assert outs[2 * k + 1]["iaqi"].get("pm10") is not None


def test_cli_register_wires_a_handler_returning_an_exit_code():
    parser = argparse.ArgumentParser(prog="aqpipe")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["aqi"])
    assert callable(args.func)
    assert run(args, stdin=io.StringIO(""), stdout=io.StringIO()) == 0


def test_cli_help_documents_periods_units_and_examples():
    out = subprocess.run([sys.executable, "-m", "aggregator.aqi_cli", "aqi", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for word in ("o3_8h", "so2_24h", "NowCast", "ppb", "examples", "daily max 8-hour", "24-hour tables"):
        assert word in out
