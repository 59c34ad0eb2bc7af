"""The bureau's case workflow as data: states, the transitions allowed between them, what
each transition requires, and what it sets in motion (domain/enforcement.md).

    open 待核实        -> verified 已核实 | dismissed 不予立案
    verified 已核实    -> filed 立案 | dismissed 不予立案
    filed 立案         -> ordered 责令改正 | closed 结案
    ordered 责令改正   -> reinspected 复查
    reinspected 复查   -> ordered (found continuing or refused: the loop) | closed (found corrected)

The store (`store.transition`) looks a transition up here, checks its fields with
`check_fields`, and applies its `effects` by name; nothing else decides what is allowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from alerts.cases.errors import TransitionRefused

__all__ = ["STATES", "TRANSITIONS", "FIELDS", "MEASURE_KINDS", "REINSPECTION_RESULTS", "State", "Transition",
           "FieldSpec", "TransitionRefused", "allowed_next", "find_transition", "check_fields", "measure_kind"]


@dataclass(frozen=True)
class State:
    key: str
    label: str  # the bureau's word for it
    terminal: bool = False


STATES: dict[str, State] = {s.key: s for s in (
    State("open", "待核实"),
    State("verified", "已核实"),
    State("dismissed", "不予立案", terminal=True),
    State("filed", "立案"),
    State("ordered", "责令改正"),
    State("reinspected", "复查"),
    State("closed", "结案", terminal=True),
)}
INITIAL_STATE = "open"

# What a re-inspection can find, and whether the violation is then continuing (a refused
# re-inspection counts as continuing: MEP Order No. 28).
REINSPECTION_RESULTS: dict[str, bool] = {"corrected": False, "continuing": True, "refused": True}

# Measures a case can record (domain/enforcement.md: the national supervision flow's step 5,
# MEP Orders 28/29/30). Key -> the bureau's word; the Chinese word is accepted as input too.
MEASURE_KINDS: dict[str, str] = {
    "order_to_correct": "责令改正",
    "fine": "罚款",
    "production_limit": "限产",
    "suspension": "停产整治",
    "seal_seizure": "查封扣押",
    "closure": "停业关闭",
    "supervision": "挂牌督办",
    "transfer": "移送",
    "no_penalty": "免于处罚",
}


# Measures that run over a period must say when they start (domain/enforcement.md: a limit,
# a suspension, a seal each carry their dates; a limit lasts up to 3 months, a seal 30 days).
DATED_MEASURES = frozenset({"order_to_correct", "production_limit", "suspension", "seal_seizure", "closure",
                            "supervision"})


def measure_kind(name: str) -> str:
    """The key of a measure given by key or by its Chinese name (`限产` -> production_limit)."""
    if name in MEASURE_KINDS:
        return name
    for key, label in MEASURE_KINDS.items():
        if name == label:
            return key
    raise ValueError(f"unknown measure {name!r}; one of: "
                     + ", ".join(f"{k} ({v})" for k, v in MEASURE_KINDS.items()))


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # 'text' | 'number' | 'bool' | 'choice' | 'measures'
    help: str
    choices: tuple[str, ...] = ()


FIELDS: dict[str, FieldSpec] = {f.name: f for f in (
    FieldSpec("reason", "text", "why the case is not filed (不予立案), e.g. a device fault or valid marks"),
    FieldSpec("finding", "text", "what the verification found (a process exceedance, a process-equipment fault)"),
    FieldSpec("case_number", "text", "the filing number (立案编号), unique"),
    FieldSpec("doc_number", "text", "the decision document's number (决定书文号)"),
    FieldSpec("fine", "number", "the fine in yuan (原处罚数额 on an order; the fine decided on closing)"),
    FieldSpec("result", "choice", "what the re-inspection found", tuple(REINSPECTION_RESULTS)),
    FieldSpec("discharge_stopped", "bool",
              "a production limit or suspension stopped the discharge: no daily penalty (MEP Order No. 28)"),
    FieldSpec("outcome", "text", "the closing outcome (结案结论)"),
    FieldSpec("measures", "measures",
              "measures decided: a list of {kind, start, end, doc_number, description, amount}; "
              "kind is one of " + ", ".join(f"{k}/{v}" for k, v in MEASURE_KINDS.items())),
)}


@dataclass(frozen=True)
class Transition:
    from_state: str
    to_state: str
    action: str  # the bureau's word for the act
    requires: tuple[str, ...] = ()  # fields that must be given
    optional: tuple[str, ...] = ()  # fields that may be given
    date: str = ""  # '' no date; 'required' / 'optional': the China date the act happened
    date_meaning: str = ""
    # Only when the case's latest re-inspection result is one of these (the loop).
    when_result: frozenset[str] | None = None
    effects: tuple[str, ...] = field(default=())  # applied by the store, by name


_CONTINUING = frozenset(r for r, cont in REINSPECTION_RESULTS.items() if cont)
_CORRECTED = frozenset(r for r, cont in REINSPECTION_RESULTS.items() if not cont)

# Every allowed transition. Decisions beyond the arrows, and why:
# - verified -> dismissed: the filing decision (立案 or 不予立案) is taken after verification,
#   so a verified exceedance can still be dismissed (insufficient evidence, manual monitoring
#   contradicting the CEMS), with a reason.
# - filed -> closed: a filed case may end without an order (免于处罚, 移送 to another
#   authority, the enterprise closed down); it records the outcome like any closing.
# - no transition leaves dismissed or closed: a new exceedance opens a new case.
TRANSITIONS: tuple[Transition, ...] = (
    Transition("open", "verified", "核实", optional=("finding",)),
    Transition("open", "dismissed", "不予立案", requires=("reason",), effects=("end",)),
    Transition("verified", "filed", "立案", requires=("case_number",), date="optional",
               date_meaning="filing date", effects=("file",)),
    Transition("verified", "dismissed", "不予立案", requires=("reason",), effects=("end",)),
    Transition("filed", "ordered", "责令改正", optional=("doc_number", "fine"), date="required",
               date_meaning="date the order was served", effects=("order",)),
    Transition("filed", "closed", "结案", requires=("outcome",), optional=("fine", "measures"), date="optional",
               date_meaning="closing date", effects=("measures", "end")),
    Transition("ordered", "reinspected", "复查", requires=("result",), optional=("discharge_stopped",),
               date="required", date_meaning="re-inspection day", effects=("reinspect",)),
    Transition("reinspected", "ordered", "再次责令改正", optional=("doc_number", "fine"), date="required",
               date_meaning="date the new order was served", when_result=_CONTINUING, effects=("order",)),
    Transition("reinspected", "closed", "结案", requires=("outcome",), optional=("fine", "measures"),
               date="optional", date_meaning="closing date", when_result=_CORRECTED, effects=("measures", "end")),
)


def allowed_next(state: str, last_result: str | None = None) -> list[str]:
    """The states a case in `state` may go to, given its latest re-inspection result."""
    return [t.to_state for t in TRANSITIONS
            if t.from_state == state and (t.when_result is None or last_result in t.when_result)]


def find_transition(case_id: int | None, state: str, to_state: str, last_result: str | None = None) -> Transition:
    """The transition state -> to_state, or TransitionRefused naming the allowed ones."""
    allowed = allowed_next(state, last_result)
    if to_state not in STATES:
        raise TransitionRefused(case_id, state, to_state, allowed,
                                f"unknown state {to_state!r} (states: {', '.join(STATES)})")
    for t in TRANSITIONS:
        if t.from_state == state and t.to_state == to_state:
            if t.when_result is not None and last_result not in t.when_result:
                raise TransitionRefused(case_id, state, to_state, allowed,
                                        f"{state} -> {to_state} needs a re-inspection result of "
                                        f"{' or '.join(sorted(t.when_result))}, the last one was {last_result}")
            return t
    raise TransitionRefused(case_id, state, to_state, allowed)


def check_fields(case_id: int | None, t: Transition, fields: dict[str, Any] | None, when: date | None,
                 today: date, last_result: str | None = None) -> dict[str, Any]:
    """The transition's fields, typed (strings from the CLI are parsed); refuses unknown,
    missing or malformed ones, a missing date, and a date in the future."""
    given = {k: v for k, v in (fields or {}).items() if v is not None and v != ""}
    allowed = allowed_next(t.from_state, last_result)

    def refuse(problem: str) -> TransitionRefused:
        return TransitionRefused(case_id, t.from_state, t.to_state, allowed, problem)

    accepted = set(t.requires) | set(t.optional)
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise refuse(f"{t.from_state} -> {t.to_state} takes no field {', '.join(unknown)}"
                     f" (it takes: {', '.join(sorted(accepted)) or 'none'})")
    missing = [name for name in t.requires if name not in given]
    if missing:
        raise refuse(f"{t.from_state} -> {t.to_state} ({t.action}) needs "
                     + "; ".join(f"{m}: {FIELDS[m].help}" for m in missing))
    if t.date == "required" and when is None:
        raise refuse(f"{t.from_state} -> {t.to_state} ({t.action}) needs --date: the {t.date_meaning}")
    if when is not None and not t.date:
        raise refuse(f"{t.from_state} -> {t.to_state} takes no date")
    if when is not None and when > today:
        raise refuse(f"the {t.date_meaning} {when} is in the future (today is {today}, China time)")
    out: dict[str, Any] = {}
    for name, value in given.items():
        try:
            out[name] = _parse(FIELDS[name], value)
        except (ValueError, TypeError) as e:
            raise refuse(f"field {name}: {e}") from None
    return out


def _parse(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == "text":
        text = str(value).strip()
        if not text:
            raise ValueError("must not be empty")
        return text
    if spec.kind == "number":
        number = float(value)
        if number < 0 or number != number:
            raise ValueError(f"must be a non-negative number, got {value!r}")
        return number
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1"):
            return True
        if str(value).lower() in ("false", "no", "0"):
            return False
        raise ValueError(f"must be true or false, got {value!r}")
    if spec.kind == "choice":
        if value not in spec.choices:
            raise ValueError(f"must be one of {', '.join(spec.choices)}, got {value!r}")
        return value
    if spec.kind == "measures":
        return _parse_measures(value)
    raise ValueError(f"unknown field kind {spec.kind}")


def _parse_measures(value: Any) -> list[dict[str, Any]]:
    items = json.loads(value) if isinstance(value, str) else value
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise ValueError("must be a list of {kind, start, end, doc_number, description, amount}")
    out = []
    for item in items:
        if not isinstance(item, dict) or "kind" not in item:
            raise ValueError(f"each measure needs a kind: {item!r}")
        unknown = set(item) - {"kind", "start", "end", "doc_number", "description", "amount"}
        if unknown:
            raise ValueError(f"unknown measure keys {', '.join(sorted(unknown))}")
        kind = measure_kind(str(item["kind"]))
        start = _day(item.get("start"))
        end = _day(item.get("end"))
        if kind in DATED_MEASURES and start is None:
            raise ValueError(f"measure {item['kind']} needs its start date (start: YYYY-MM-DD)")
        if start and end and end < start:
            raise ValueError(f"measure {item['kind']} ends ({end}) before it starts ({start})")
        out.append({"kind": kind, "start": start, "end": end,
                    "doc_number": item.get("doc_number"), "description": item.get("description") or "",
                    "amount": float(item["amount"]) if item.get("amount") is not None else None})
    return out


def _day(value: Any) -> date | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value))
