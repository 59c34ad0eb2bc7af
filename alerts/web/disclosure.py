"""违法公示: what the public page may show of a closed, penalised case, and nothing else.

MEP Orders 28/30 require the orders on daily penalties and production limits or
suspensions, and the penalty decisions, to be made public: the enterprise, its permit
number, the violation, the measures and their dates. Everything else on a case
(minute data, internal notes, who handled it, documents) stays inside the desk. This
module is a whitelist: a field reaches the page only if it is named here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alerts.cases.store import CaseView
from aqpipe.hj633 import POLLUTANT_NAMES
from alerts.web.svgchart import CHINA_TZ

# Measures that are penalty decisions to be published (a `no_penalty`, `transfer` or
# `supervision` record alone does not make a case appear).
PUBLISHED_MEASURES = frozenset({"order_to_correct", "fine", "production_limit", "suspension", "seal_seizure",
                                "closure"})


@dataclass(frozen=True)
class PublicMeasure:
    label: str  # 责令改正, 罚款, 限产 ...
    doc_number: str | None
    start_date: str | None
    end_date: str | None
    amount: float | None


@dataclass(frozen=True)
class PublicCase:
    enterprise: str
    permit: str | None
    violation: str
    measures: list[PublicMeasure]
    daily_penalty_days: int  # 按日连续处罚 days, summed over re-inspections
    daily_penalty_amount: float | None
    decided: str  # China date of the closing decision

    def to_json(self) -> dict:
        return {"enterprise": self.enterprise, "permit": self.permit, "violation": self.violation,
                "measures": [m.__dict__ for m in self.measures], "daily_penalty_days": self.daily_penalty_days,
                "daily_penalty_amount": self.daily_penalty_amount, "date": self.decided}


def is_disclosed(view: CaseView) -> bool:
    """A closed case with at least one penalty decision (a published measure or a daily penalty)."""
    return view.status == "closed" and (
        any(m["kind"] in PUBLISHED_MEASURES for m in view.measures)
        or any(p["days"] > 0 and not p["discharge_stopped"] for p in view.penalties))


def _china_day(iso: str | None) -> str:
    return datetime.fromisoformat(iso).astimezone(CHINA_TZ).date().isoformat() if iso else ""


def public_case(view: CaseView) -> PublicCase:
    j = view.to_json()
    pollutant = POLLUTANT_NAMES.get(view.pollutant, view.pollutant)
    first, last = _china_day(j["first_exceeded_hour"]), _china_day(j["last_exceeded_hour"])
    period = first if first == last else f"{first} 至 {last}"
    violation = (f"{pollutant} 排放浓度超过排放限值（{view.limit:g} mg/m³，{view.limit_source}），"
                 f"{period} 共 {j['exceeded_hours']} 小时超标，涉及 {j['days_with_exceedance']} 天")
    measures = [PublicMeasure(m["label"], m["doc_number"], m["start_date"], m["end_date"], m["amount"])
                for m in view.measures if m["kind"] in PUBLISHED_MEASURES]
    counted = [p for p in view.penalties if not p["discharge_stopped"]]
    total = sum(p["total_amount"] for p in counted if p["total_amount"] is not None) if counted else None
    return PublicCase(view.enterprise, view.permit, violation, measures, sum(p["days"] for p in counted),
                      total or None, _china_day(j["closed_at"]))
