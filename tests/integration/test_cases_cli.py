"""`aqpipe cases` and `aqpipe marks` as an inspector runs them: the real entry point, a real
SQLite case database in the test's data_dir (filled the way the alert engine fills it)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alerts.cases import store
from alerts.cases.db import engine_for_url, migrate

pytestmark = pytest.mark.integration
AQPIPE = str(Path(sys.executable).parent / "aqpipe")
UTC = timezone.utc
T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)
CONTRACT = {"id": int, "kind": str, "outlet": str, "enterprise": str, "permit": str, "pollutant": str,
            "limit": float, "limit_source": str, "reference_o2": float, "status": str, "opened_at": str,
            "first_exceeded_hour": str, "last_exceeded_hour": str, "exceeded_hours": int,
            "days_with_exceedance": int, "hours": list, "url": str}


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    return {"AQPIPE_DATA_DIR": str(tmp_path / "data"),
            "AQPIPE_ALERTS__CASE_URL_TEMPLATE": "https://hb.example.gov.cn/case/{case_id}"}


@pytest.fixture
def engine(cli_env):
    e = engine_for_url(f"sqlite:///{cli_env['AQPIPE_DATA_DIR']}/cases.sqlite")
    migrate(e)
    yield e
    e.dispose()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AQPIPE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def seed(engine, outlet: str = "TS-GAS-01", pollutant: str = "so2", hours: int = 2) -> int:
    with engine.begin() as conn:
        for i in range(hours):
            end = T0 + timedelta(hours=i)
            case_id = store.record_exceeded_hour(conn, store.StackHour(
                outlet=outlet, enterprise="麦积区示例燃气供热站", permit="91620503MA002XXXXX001P", pollutant=pollutant,
                limit=50.0, limit_source="permit", reference_o2=3.5, hour_end=end, avg=40.0, avg_o2corr=61.0 + i,
                o2=9.0, valid_minutes=58, exceeded=True,
                minutes=[{"time": (end - timedelta(minutes=m)).isoformat(), "value": 40.0, "o2": 9.0, "flag": "N"}
                         for m in range(58)]), end + timedelta(minutes=1))
    return case_id


def test_cases_list_json_prints_one_contract_object_per_line(cli_env, engine) -> None:
    a = seed(engine)
    b = seed(engine, pollutant="nox", hours=1)
    done = run(cli_env, "cases", "list", "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert sorted(o["id"] for o in objects) == sorted([a, b])
    for o in objects:
        for key, typ in CONTRACT.items():
            assert isinstance(o[key], typ), (key, o[key])
        assert o["url"] == f"https://hb.example.gov.cn/case/{o['id']}"
        for h in o["hours"]:
            assert {"hour_end", "avg", "avg_o2corr", "o2", "valid_minutes", "exceeded"} <= set(h)
    so2 = next(o for o in objects if o["id"] == a)
    assert (so2["exceeded_hours"], so2["days_with_exceedance"], so2["hours"][1]["avg_o2corr"]) == (2, 1, 62.0)

    filtered = run(cli_env, "cases", "list", "--status", "verified", "--json")
    assert filtered.returncode == 0 and filtered.stdout == ""
    text = run(cli_env, "cases", "list")
    assert "TS-GAS-01" in text.stdout and "open 待核实" in text.stdout


def test_a_case_is_taken_through_the_workflow_from_the_command_line(cli_env, engine) -> None:
    case_id = str(seed(engine))
    today = datetime.now(timezone(timedelta(hours=8))).date()
    served = today - timedelta(days=20)
    steps = [
        ["verified", "--note", "现场核实：脱硫塔循环泵故障", "--ref", "现场检查笔录 2026-031"],
        ["filed", "--field", "case_number=天环立〔2026〕15号"],
        ["ordered", "--date", served.isoformat(), "--field", "doc_number=天环改〔2026〕8号", "--field", "fine=100000"],
        ["reinspected", "--date", today.isoformat(), "--field", "result=continuing"],
    ]
    for step in steps:
        done = run(cli_env, "cases", "transition", case_id, step[0], "--by", "张三", *step[1:])
        assert done.returncode == 0, done.stderr
    assert "daily penalty: 20 day(s)" in done.stdout and "2,000,000 yuan" in done.stdout

    refused = run(cli_env, "cases", "transition", case_id, "closed", "--by", "张三", "--field", "outcome=已改正")
    assert refused.returncode == 2
    assert "reinspected -> closed needs a re-inspection result of corrected" in refused.stderr
    assert "may go to: ordered" in refused.stderr

    shown = json.loads(run(cli_env, "cases", "show", case_id, "--json").stdout)
    assert shown["status"] == "reinspected" and shown["case_number"] == "天环立〔2026〕15号"
    assert [p["days"] for p in shown["penalties"]] == [20]
    verified = next(e for e in shown["history"] if e["to_state"] == "verified")
    assert (verified["by"], verified["refs"]) == ("张三", ["现场检查笔录 2026-031"])
    text = run(cli_env, "cases", "show", case_id)
    assert text.returncode == 0 and "按日连续处罚 20 day(s)" in text.stdout and "第五十九条" in text.stdout


@pytest.mark.parametrize("args, code, message", [
    (["cases", "transition", "{id}", "filed", "--by", "x", "--field", "case_number=1"], 2,
     "open -> filed is not a transition of the workflow; from open the case may go to: verified, dismissed"),
    (["cases", "transition", "{id}", "dismissed", "--by", "x"], 2, "needs reason"),
    (["cases", "transition", "{id}", "verified", "--by", "x", "--field", "nonsense"], 2, "write KEY=VALUE"),
    (["cases", "transition", "999", "verified", "--by", "x"], 1, "no case 999"),
    (["cases", "show", "999"], 1, "no case 999"),
    (["cases", "transition", "{id}", "verified"], 2, "the following arguments are required: --by"),
    (["marks", "remove", "999", "--by", "x", "--reason", "y"], 1, "no mark 999"),
    (["marks", "add", "--outlet", "O", "--type", "holiday", "--start", "2026-03-01 08:00", "--reason", "r",
      "--by", "x"], 2, "unknown mark type 'holiday'"),
])
def test_errors_are_clear_and_change_nothing(cli_env, engine, args, code, message) -> None:
    case_id = seed(engine)
    with engine.connect() as conn:
        before = store.get_case(conn, case_id).to_json()
    done = run(cli_env, *[a.replace("{id}", str(case_id)) for a in args])
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    with engine.connect() as conn:
        assert store.get_case(conn, case_id).to_json() == before


def test_marks_added_and_removed_from_the_command_line_re_evaluate_the_case(cli_env, engine) -> None:
    case_id = seed(engine, hours=3)
    # T0 is 10:00 China time: this mark covers the hours ending 10:00 and 11:00 (CST)
    added = run(cli_env, "marks", "add", "--outlet", "TS-GAS-01", "--type", "启炉", "--start", "2026-03-01 09:30",
                "--end", "2026-03-01 10:30", "--reason", "冷态启炉", "--evidence", "运行台账 p.17", "--by", "企业 王",
                "--json")
    assert added.returncode == 0, added.stderr
    mark = json.loads(added.stdout.splitlines()[0])
    assert (mark["type"], mark["exempting"], mark["start"]) == ("startup", True, "2026-03-01T01:30:00+00:00")
    assert [h["mark_id"] for h in mark["reevaluated_hours"]] == [mark["id"], mark["id"]]
    shown = json.loads(run(cli_env, "cases", "show", str(case_id), "--json").stdout)
    assert [h["verdict"] for h in shown["hours"]] == ["marked", "marked", "exceeded"]
    assert shown["exceeded_hours"] == 1

    listed = run(cli_env, "marks", "list", "--outlet", "TS-GAS-01", "--json")
    assert [json.loads(x)["id"] for x in listed.stdout.splitlines()] == [mark["id"]]
    removed = run(cli_env, "marks", "remove", str(mark["id"]), "--by", "检查员 李", "--reason", "标记不实")
    assert removed.returncode == 0, removed.stderr
    assert "2 case hour(s) re-evaluated" in removed.stdout
    shown = json.loads(run(cli_env, "cases", "show", str(case_id), "--json").stdout)
    assert shown["exceeded_hours"] == 3
    assert run(cli_env, "marks", "list", "--json").stdout == ""
    everything = [json.loads(x) for x in run(cli_env, "marks", "list", "--all", "--json").stdout.splitlines()]
    assert [(m["active"], m["removed_by"]) for m in everything] == [(False, "检查员 李")]


def test_export_writes_the_evidence(cli_env, engine, tmp_path) -> None:
    case_id = str(seed(engine))
    out = tmp_path / "case.json"
    done = run(cli_env, "cases", "export", case_id, "--format", "json", "-o", str(out))
    assert done.returncode == 0, done.stderr
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert len(exported["hours"][0]["minutes"]) == 58 and exported["permit"] == "91620503MA002XXXXX001P"
    rows = list(csv.DictReader(io.StringIO(run(cli_env, "cases", "export", case_id, "--format", "csv").stdout)))
    assert [r["avg_o2corr"] for r in rows] == ["61.0", "62.0"]


def test_overdue_report_and_measure_commands(cli_env, engine) -> None:
    case_id = str(seed(engine))  # opened 2026-03-01: its enterprise report was due 48 h later
    late = [json.loads(x) for x in run(cli_env, "cases", "overdue", "--json").stdout.splitlines()]
    assert [(d["case_id"], d["kind"]) for d in late] == [(int(case_id), "enterprise_report")]
    done = run(cli_env, "cases", "report", case_id, "--by", "李", "--received", "2026-03-02 09:00", "--ref", "报告.pdf")
    assert done.returncode == 0, done.stderr
    assert run(cli_env, "cases", "overdue", "--json").stdout == ""
    done = run(cli_env, "cases", "measure", case_id, "限产", "--by", "李", "--start", "2026-03-03", "--end",
               "2026-06-02", "--doc-number", "天环限〔2026〕3号")
    assert done.returncode == 0, done.stderr
    shown = json.loads(run(cli_env, "cases", "show", case_id, "--json").stdout)
    assert shown["enterprise_reports"][0]["received_at"] == "2026-03-02T01:00:00+00:00"
    assert [(m["kind"], m["start_date"], m["end_date"]) for m in shown["measures"]] == [
        ("production_limit", "2026-03-03", "2026-06-02")]


def test_help_explains_the_workflow_and_the_mark_types() -> None:
    done = subprocess.run([AQPIPE, "cases", "transition", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "ordered      -> reinspected  复查: result" in done.stdout
    assert "--date required: date the order was served" in done.stdout
    marks_help = subprocess.run([AQPIPE, "marks", "add", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "停运" in marks_help and "exempting" in marks_help and "China time" in marks_help


def test_the_cli_works_on_postgresql_from_a_plain_postgresql_url(tmp_path, postgresql_url) -> None:
    plain = postgresql_url.replace("postgresql+psycopg://", "postgresql://")  # what an operator writes
    env = {"AQPIPE_DATA_DIR": str(tmp_path / "data"), "AQPIPE_CASES__DATABASE_URL": plain}
    pg = engine_for_url(postgresql_url)
    migrate(pg)
    try:
        case_id = str(seed(pg))
        done = run(env, "cases", "transition", case_id, "dismissed", "--by", "张三", "--field", "reason=CEMS 故障")
        assert done.returncode == 0, done.stderr
        listed = [json.loads(x) for x in run(env, "cases", "list", "--json").stdout.splitlines()]
        assert [(o["id"], o["status"]) for o in listed] == [(int(case_id), "dismissed")]
        assert not (tmp_path / "data" / "cases.sqlite").exists()
    finally:
        pg.dispose()
