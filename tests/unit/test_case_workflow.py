"""The case workflow table, the daily-penalty day count and the legal citations: pure data
and pure functions (the store applying them is tested in tests/integration/test_case_store.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from alerts.cases import citations, penalty, workflow
from alerts.cases.errors import TransitionRefused
from alerts.cases.marks import MARK_TYPES, mark_type
from alerts.cases.errors import MarkError


# --- the transition table --------------------------------------------------------------


def test_every_state_is_reachable_from_open_and_every_non_terminal_state_can_move() -> None:
    seen, todo = {"open"}, ["open"]
    while todo:
        state = todo.pop()
        for t in workflow.TRANSITIONS:
            if t.from_state == state and t.to_state not in seen:
                seen.add(t.to_state)
                todo.append(t.to_state)
    assert seen == set(workflow.STATES)
    for key, state in workflow.STATES.items():
        outgoing = [t for t in workflow.TRANSITIONS if t.from_state == key]
        assert bool(outgoing) == (not state.terminal), key


def test_every_field_a_transition_names_is_defined() -> None:
    for t in workflow.TRANSITIONS:
        assert set(t.requires) | set(t.optional) <= set(workflow.FIELDS), t


@pytest.mark.parametrize("state, last_result, expected", [
    ("open", None, ["verified", "dismissed"]),
    ("verified", None, ["filed", "dismissed"]),
    ("filed", None, ["ordered", "closed"]),
    ("ordered", "continuing", ["reinspected"]),
    ("reinspected", "continuing", ["ordered"]),
    ("reinspected", "refused", ["ordered"]),
    ("reinspected", "corrected", ["closed"]),
    ("closed", None, []),
    ("dismissed", None, []),
])
def test_allowed_next_states(state, last_result, expected) -> None:
    assert workflow.allowed_next(state, last_result) == expected


def test_a_refusal_names_from_to_and_the_allowed_states() -> None:
    with pytest.raises(TransitionRefused) as e:
        workflow.find_transition(7, "open", "closed")
    assert (e.value.case_id, e.value.from_state, e.value.to_state, e.value.allowed) == (
        7, "open", "closed", ["verified", "dismissed"])
    assert str(e.value) == ("case 7: open -> closed is not a transition of the workflow; "
                            "from open the case may go to: verified, dismissed")


def test_closing_after_a_continuing_reinspection_is_refused_with_the_reason() -> None:
    with pytest.raises(TransitionRefused, match="needs a re-inspection result of corrected"):
        workflow.find_transition(1, "reinspected", "closed", "continuing")


def test_fields_from_the_command_line_are_typed() -> None:
    t = workflow.find_transition(1, "reinspected", "closed", "corrected")
    got = workflow.check_fields(1, t, {"outcome": " 已改正 ", "fine": "50000",
                                       "measures": '[{"kind": "停产整治", "start": "2026-03-01", "end": "2026-04-01"}]'},
                                None, date(2026, 5, 1))
    assert got["outcome"] == "已改正" and got["fine"] == 50000.0
    assert got["measures"] == [{"kind": "suspension", "start": date(2026, 3, 1), "end": date(2026, 4, 1),
                                "doc_number": None, "description": "", "amount": None}]


@pytest.mark.parametrize("fields, problem", [
    ({"outcome": "x", "fine": "-5"}, "non-negative"),
    ({"outcome": "x", "fine": "lots"}, "could not convert"),
    ({"outcome": "x", "measures": '[{"kind": "遣返"}]'}, "unknown measure"),
    ({"outcome": "x", "measures": '[{"kind": "限产", "start": "2026-04-02", "end": "2026-04-01"}]'}, "ends"),
    ({"outcome": "x", "measures": '[{"kind": "查封扣押", "end": "2026-04-01"}]'}, "needs its start date"),
])
def test_malformed_fields_are_refused(fields, problem) -> None:
    t = workflow.find_transition(1, "filed", "closed")
    with pytest.raises(TransitionRefused, match=problem):
        workflow.check_fields(1, t, fields, None, date(2026, 5, 1))


def test_measures_and_mark_types_accept_the_chinese_word() -> None:
    assert workflow.measure_kind("查封扣押") == "seal_seizure"
    assert mark_type("通讯中断").key == "comms_outage"
    assert MARK_TYPES["stopped"].exempting and not MARK_TYPES["note"].exempting
    with pytest.raises(MarkError, match="unknown mark type 'holiday'; one of: stopped"):
        mark_type("holiday")


# --- the daily continuous penalty (hand-computed) ----------------------------------------


@pytest.mark.parametrize("served, reinspected, days", [
    (date(2026, 3, 1), date(2026, 3, 31), 30),  # 2..31 March
    (date(2026, 3, 1), date(2026, 3, 2), 1),  # only the re-inspection day
    (date(2026, 3, 1), date(2026, 3, 1), 0),  # re-inspected the day it was served: no day after it yet
    (date(2024, 2, 20), date(2024, 3, 1), 10),  # leap year: 21..29 Feb (9) + 1 Mar
    (date(2025, 12, 20), date(2026, 1, 10), 21),  # across the year: 21..31 Dec (11) + 1..10 Jan
])
def test_penalty_days_run_from_the_day_after_service_through_the_reinspection(served, reinspected, days) -> None:
    assert penalty.penalty_days(served, reinspected) == days


def test_the_daily_penalty_is_the_original_fine_per_day() -> None:
    p = penalty.daily_penalty(date(2026, 3, 5), date(2026, 3, 25), daily_amount=200_000)
    assert (p.days, p.total_amount) == (20, 4_000_000)


def test_no_daily_penalty_when_the_discharge_was_stopped_or_corrected() -> None:
    assert penalty.daily_penalty(date(2026, 3, 5), date(2026, 3, 25), discharge_stopped=True,
                                 daily_amount=1000).days == 0
    assert penalty.daily_penalty(date(2026, 3, 5), date(2026, 3, 25), continuing=False).days == 0


def test_successive_cycles_accumulate() -> None:
    cycles = [penalty.daily_penalty(date(2026, 3, 5), date(2026, 3, 25)),
              penalty.daily_penalty(date(2026, 3, 25), date(2026, 4, 20))]
    assert penalty.cumulative_days(cycles) == 20 + 26


def test_a_reinspection_before_the_order_is_an_error() -> None:
    with pytest.raises(penalty.PenaltyError, match="before the order was served"):
        penalty.penalty_days(date(2026, 3, 5), date(2026, 3, 4))


# --- legal citations ---------------------------------------------------------------------


@pytest.mark.parametrize("day, law, article", [
    (date(2025, 6, 1), "中华人民共和国环境保护法（2014年修订）", "第五十九条"),
    (date(2026, 8, 14), "中华人民共和国环境保护法（2014年修订）", "第五十九条"),
    (date(2026, 8, 15), "生态环境法典", "按日连续处罚条款（条号待核实）"),
])
def test_the_citation_is_chosen_by_the_date_of_the_violation(day, law, article) -> None:
    c = citations.cite("daily_penalty", day)
    assert (c.law, c.article) == (law, article)


def test_the_code_rows_say_they_are_medium_confidence() -> None:
    assert citations.cite("limit_suspension", date(2027, 1, 1)).confidence == "medium"
    assert citations.cite("limit_suspension", date(2020, 1, 1)).article == "第六十条"
    assert citations.cite("daily_penalty", date(2010, 1, 1)) is None


def test_overlapping_citations_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[[citation]]\ntopic = "x"\nlaw = "A"\narticle = "1"\neffective_from = 2015-01-01\n'
                 '[[citation]]\ntopic = "x"\nlaw = "B"\narticle = "2"\neffective_from = 2020-01-01\n', encoding="utf-8")
    with pytest.raises(citations.CitationError, match="two x rows in force on 2020-01-01"):
        citations.load(f)


def test_a_citation_row_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[[citation]]\ntopic = "x"\nlaw = "A"\narticle = "1"\neffective_from = 2015-01-01\nvalid = 1\n',
                 encoding="utf-8")
    with pytest.raises(citations.CitationError, match="citation #1: unknown keys valid"):
        citations.load(f)
