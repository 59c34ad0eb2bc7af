"""alerts/web/disclosure.py: which cases are published, and that only public fields are."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

from alerts.cases.store import CaseView
from alerts.web.disclosure import is_disclosed, public_case

T = datetime(2026, 11, 20, 2, tzinfo=timezone.utc)


def _view(**kw) -> CaseView:
    base = CaseView(
        id=7, kind="stack_exceedance", outlet="TS-GAS-01", enterprise="示例热力公司", permit="91620503MA002XXXXX001P",
        pollutant="so2", limit=50.0, limit_source="permit", reference_o2=3.5, status="closed",
        case_number="麦环罚〔2026〕7号", outcome="已整改（内部结论）", opened_at=T, updated_at=T, closed_at=T,
        url="http://127.0.0.1:9120/cases/7",
        hours=[{"hour_end": "2026-11-20T02:00:00+00:00", "china_date": "2026-11-20", "avg": 40.1, "avg_o2corr": 61.3,
                "o2": 9.0, "valid_minutes": 60, "limit": 50.0, "exceeded": True, "verdict": "exceeded", "mark_id": None,
                "minutes": [{"time": "2026-11-20T01:01:00+00:00", "value": 39.87, "o2": 9.0, "flag": "N"}]}],
        history=[{"by": "张检查", "note": "内部备注", "action": "transition"}], marks=[], deadlines=[],
        penalties=[], measures=[{"kind": "production_limit", "label": "限产", "doc_number": "麦环限〔2026〕7号",
                                 "start_date": "2026-11-21", "end_date": None, "amount": None,
                                 "description": "内部说明", "created_by": "张检查"}],
        enterprise_reports=[], citations=[], not_judged_hours=[], allowed_next=[])
    return replace(base, **kw)


def test_a_closed_case_with_a_penalty_decision_is_disclosed():
    assert is_disclosed(_view())


def test_open_cases_and_cases_without_a_penalty_are_not():
    assert not is_disclosed(_view(status="ordered"))
    assert not is_disclosed(_view(status="dismissed"))
    assert not is_disclosed(_view(measures=[{"kind": "no_penalty", "label": "免于处罚"}]))
    daily = {"days": 12, "discharge_stopped": False, "total_amount": 1.2e6}
    assert is_disclosed(_view(measures=[], penalties=[daily]))
    assert not is_disclosed(_view(measures=[], penalties=[{**daily, "discharge_stopped": True}]))


def test_only_public_fields_reach_the_page():
    text = json.dumps(public_case(_view()).to_json(), ensure_ascii=False)
    for public in ("示例热力公司", "91620503MA002XXXXX001P", "限产", "麦环限〔2026〕7号", "2026-11-21", "超过排放限值"):
        assert public in text
    for private in ("张检查", "内部备注", "内部说明", "内部结论", "TS-GAS-01", "39.87", "麦环罚〔2026〕7号", "cases/7"):
        assert private not in text
