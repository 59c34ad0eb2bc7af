"""The alert engine: derived records and checks in, alert state and case effects out.

Every entry point takes a SQLAlchemy Connection inside the caller's transaction (the
service commits the effect of one MQTT message in one transaction, then acks it). Alert
state lives in the case database (`alerts`, `alert_hours`: ALERTS-CONTRACT), so a restart
neither re-notifies nor forgets. Notifications are not sent here: a changed alert is stored
with `last_sent_at` NULL, and the service's sender delivers it after the commit (an outbox:
a crash between commit and delivery delivers on the next start, never twice thanks to the
receivers' idempotency).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import Connection, and_, delete, insert, select, update

from alerts import metrics
from alerts.cases import schema
from alerts.cases import store
from alerts.lifecycle import AlertState, Episode, Period, advance, fingerprint, replay
from alerts.notify import Notification
from alerts.rules import (AqiDailyRule, AqiHourlyRule, AqiWatchRule, Judgement, RuleSet, SilenceRule,
                          StackExceedanceRule, StuckRule, ValidRateRule, judge_aqi_day, judge_aqi_hour, judge_silence,
                          judge_stack_hour, judge_stuck, judge_valid_rate, watch_levels)
from aqpipe.registry import REFERENCE_O2, Registry

log = logging.getLogger("aqpipe.alerts")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CHINA = timezone(timedelta(hours=8))
ENGINE_USER = "aqpipe-alerts"  # who the audit log names for the engine's case entries
# How far back verdicts are kept per series (beyond the aggregator's 48 h lateness and
# the longest watch window); older ones are pruned as new ones arrive.
KEEP_PERIODS = timedelta(days=8)

POLLUTANT_NAMES = {"so2": "二氧化硫", "nox": "氮氧化物", "pm": "颗粒物", "hg": "汞及其化合物", "co": "一氧化碳"}
POLLUTANT_UNITS = {"hg": "µg/m³"}  # others mg/m³ (DESIGN.md stack payload units)
CATEGORY_NAMES = {1: "优", 2: "良", 3: "轻度污染", 4: "中度污染", 5: "重度污染", 6: "严重污染"}


def parse_time(value: Any) -> datetime:
    """A record's time (ISO 8601 with offset) as an aware UTC datetime."""
    t = datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        raise ValueError(f"time without offset: {value!r}")
    return t.astimezone(timezone.utc)


def china(t: datetime) -> str:
    return t.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def china_hour(hour_end: datetime) -> str:
    """The hour (labelled by its end) as the bureau reads it: 2026-11-24 09:00–10:00."""
    return f"{china(hour_end - HOUR)}–{hour_end.astimezone(CHINA):%H:%M}"


# ---------------------------------------------------------------------------------------
# Persistence of the lifecycle (tables `alerts` and `alert_hours`)

def _state_from_row(row: Any) -> AlertState:
    labels = row.labels if isinstance(row.labels, dict) else json.loads(row.labels)
    ann = row.annotations if isinstance(row.annotations, dict) else json.loads(row.annotations)
    return AlertState(row.fingerprint, row.rule, row.alertname, labels, ann, row.state, row.active_since, row.fired_at,
                      row.resolved_at, row.last_sent_at, row.value, row.threshold, row.case_id, row.updated_at)


def load_alert(conn: Connection, fp: str) -> AlertState | None:
    row = conn.execute(select(schema.alerts).where(schema.alerts.c.fingerprint == fp)).first()
    return _state_from_row(row) if row is not None else None


def load_alerts(conn: Connection, rule: str | None = None, states: Iterable[str] | None = None) -> list[AlertState]:
    q = select(schema.alerts)
    if rule is not None:
        q = q.where(schema.alerts.c.rule == rule)
    if states is not None:
        q = q.where(schema.alerts.c.state.in_(list(states)))
    return [_state_from_row(r) for r in conn.execute(q.order_by(schema.alerts.c.fingerprint))]


def save_alert(conn: Connection, st: AlertState, existed: bool) -> None:
    """Upsert one alert row; an inactive series (pending that went back) has no row."""
    t = schema.alerts
    if st.state == "inactive":
        if existed:
            conn.execute(delete(t).where(t.c.fingerprint == st.fingerprint))
        return
    values = {"rule": st.rule, "alertname": st.alertname, "labels": st.labels, "annotations": st.annotations,
              "state": st.state, "active_since": st.active_since, "fired_at": st.fired_at,
              "resolved_at": st.resolved_at, "last_sent_at": st.last_sent_at, "value": st.value,
              "threshold": st.threshold, "case_id": st.case_id, "updated_at": st.updated_at}
    if existed:
        conn.execute(update(t).where(t.c.fingerprint == st.fingerprint).values(**values))
    else:
        conn.execute(insert(t).values(fingerprint=st.fingerprint, **values))


def load_periods(conn: Connection, fp: str) -> dict[datetime, Period]:
    t = schema.alert_hours
    rows = conn.execute(select(t.c.hour_end, t.c.verdict, t.c.reason).where(t.c.fingerprint == fp))
    return {r.hour_end: Period(r.verdict, None, None, r.reason or "") for r in rows}


def save_period(conn: Connection, fp: str, at: datetime, period: Period, existed: bool) -> None:
    t = schema.alert_hours
    if existed:
        conn.execute(update(t).where(and_(t.c.fingerprint == fp, t.c.hour_end == at))
                     .values(verdict=period.verdict, reason=period.reason))
    else:
        conn.execute(insert(t).values(fingerprint=fp, hour_end=at, verdict=period.verdict, reason=period.reason))


def prune_periods(conn: Connection, fp: str, before: datetime) -> None:
    t = schema.alert_hours
    conn.execute(delete(t).where(and_(t.c.fingerprint == fp, t.c.hour_end < before)))


def unsent(conn: Connection) -> list[AlertState]:
    """State changes not yet delivered to every channel (the outbox)."""
    t = schema.alerts
    return [_state_from_row(r) for r in conn.execute(
        select(t).where(t.c.last_sent_at.is_(None), t.c.state.in_(["firing", "resolved"])).order_by(t.c.updated_at))]


def due_for_resend(conn: Connection, now: datetime, resend_s: float) -> list[AlertState]:
    """Firing alerts last sent more than `resend_s` ago: Alertmanager must hear them again."""
    t = schema.alerts
    return [_state_from_row(r) for r in conn.execute(
        select(t).where(t.c.state == "firing", t.c.last_sent_at < now - timedelta(seconds=resend_s)))]


def mark_sent(conn: Connection, sent: list[tuple[str, datetime | None]], at: datetime) -> None:
    """Record delivery of (fingerprint, updated_at) pairs; a row changed since it was read
    (a newer change, not yet delivered) keeps last_sent_at NULL."""
    t = schema.alerts
    for fp, updated_at in sent:
        conn.execute(update(t).where(t.c.fingerprint == fp, t.c.updated_at == updated_at).values(last_sent_at=at))


def notification(st: AlertState) -> Notification:
    """The message every channel sends for a stored alert."""
    return Notification(st.fingerprint, st.rule, "resolved" if st.state == "resolved" else "firing",  # type: ignore[arg-type]
                        st.labels, st.annotations, st.active_since or st.fired_at or st.updated_at,  # type: ignore[arg-type]
                        st.resolved_at if st.state == "resolved" else None, st.value, st.threshold, st.case_id,
                        st.annotations.get("case_url", ""))


# ---------------------------------------------------------------------------------------
# Minute data behind a stack hour (evidence for the case)

class MinuteSource(Protocol):
    def minutes(self, outlet: str, pollutant: str, hour_end: datetime) -> list[dict[str, Any]]: ...


def hour_o2(minutes: list[dict[str, Any]]) -> float | None:
    """Mean O2 of the minutes whose pollutant value is valid (flag N or none)."""
    o2 = [m["o2"] for m in minutes if m.get("o2") is not None and m.get("value") is not None
          and m.get("flag") in ("", "N", None)]
    return round(sum(o2) / len(o2), 3) if o2 else None


# ---------------------------------------------------------------------------------------

@dataclass
class Effects:
    """What one record or check did: alerts changed (to deliver), cases touched, evaluations."""

    changed: list[AlertState] = field(default_factory=list)
    cases: set[int] = field(default_factory=set)
    evaluations: int = 0

    def add(self, other: "Effects") -> None:
        self.changed += other.changed
        self.cases |= other.cases
        self.evaluations += other.evaluations


@dataclass
class Observed:
    before: AlertState | None
    after: AlertState
    notify: str | None
    periods_before: dict[datetime, Period]
    periods: dict[datetime, Period]
    unchanged: bool  # the same verdict again (a redelivery): nothing was written


class AlertEngine:
    """Evaluates rules over derived records and checks; the caller owns the transaction."""

    def __init__(self, rules: RuleSet, registry: Registry, case_url_template: str,
                 minutes: MinuteSource | None = None,
                 aqi_history: Callable[[str, str, datetime, int], list[float | None]] | None = None,
                 policy: store.CasePolicy | None = None) -> None:
        self.policy = policy
        # cases.fault_mark_hours_per_year: fault marks exempt only that many hours a year
        self._fault_cap = policy.fault_mark_hours_per_year if policy is not None else None
        self._evidence: dict[tuple[str, str, datetime], list[dict[str, Any]]] = {}
        self.rules = rules
        self.registry = registry
        self.case_url_template = case_url_template
        self.minutes = minutes
        self.aqi_history = aqi_history

    # --- the generic step: one verdict for one series ---
    def observe(self, conn: Connection, rule: Any, labels: dict[str, str], at: datetime, period: Period,
                now: datetime, for_n: int = 1, resolve_after: int = 1) -> Observed:
        metrics.EVALUATIONS.labels(rule.name).inc()
        fp = fingerprint(rule.name, labels)
        before_periods = load_periods(conn, fp)
        old = before_periods.get(at)
        stored = load_alert(conn, fp)
        if old is not None and old.verdict == period.verdict:  # a redelivery (or a replay): nothing new
            st = stored or AlertState(fp, rule.name, rule.alertname, labels, {})
            return Observed(stored, st, None, before_periods, before_periods, True)
        save_period(conn, fp, at, period, existed=old is not None)
        periods = {**before_periods, at: period}
        if len(periods) > 48 and min(periods) < at - KEEP_PERIODS:
            prune_periods(conn, fp, at - KEEP_PERIODS)
        base = stored or AlertState(fp, rule.name, rule.alertname, labels, {})
        episode = replay(periods, for_n, resolve_after)
        if episode.value is None:  # the latest judged period was read back (no numbers kept): keep the last known
            episode = replace(episode, value=base.value, threshold=base.threshold)
        if at == max(periods) and period.value is not None and episode.state == base.state == "firing" \
                and period.verdict == "exceeded":
            episode = replace(episode, value=period.value, threshold=period.threshold)
        after, notify = advance(replace(base, labels=labels), episode, now)
        return Observed(stored, after, notify, before_periods, periods, False)

    def _commit(self, conn: Connection, obs: Observed, annotations: dict[str, str], effects: Effects) -> None:
        # new numbers on a firing alert are not a new notice: the next resend carries them
        after = replace(obs.after, annotations=annotations)
        save_alert(conn, after, existed=obs.before is not None)
        if obs.notify is not None:
            metrics.TRANSITIONS.labels(after.rule, obs.notify).inc()
            effects.changed.append(after)
            log.info("event=alert_%s rule=%s fingerprint=%s labels=%s value=%s", obs.notify, after.rule,
                     after.fingerprint, ",".join(f"{k}={v}" for k, v in sorted(after.labels.items())), after.value)

    # --- stack_exceedance: aq/v1/derived/stack/{outlet} ---
    def stack_record(self, conn: Connection, record: dict[str, Any], now: datetime,
                     evidence: list[dict[str, Any]] | None = None) -> Effects:
        """`evidence`: the hour's minute data when the caller fetched it before opening the
        transaction (the service does, for exceeded hours: the write lock is held shorter)."""
        effects = Effects()
        self._evidence = {} if evidence is None else {(str(record["outlet"]), str(record["pollutant"]),
                                                       parse_time(record["time"])): evidence}
        outlet_id, pollutant = str(record["outlet"]), str(record["pollutant"])
        hour_end = parse_time(record["time"])
        outlet = self.registry.outlets.get(outlet_id)
        for rule in self.rules.of_kind("stack_exceedance"):
            if rule.pollutants and pollutant not in rule.pollutants:
                continue
            mark = store.exempting_mark(conn, outlet_id, pollutant, hour_end - HOUR, hour_end, self._fault_cap)
            j = judge_stack_hour(rule, record, exempt_by=mark.type if mark is not None else None)
            effects.evaluations += 1
            labels = {"alertname": rule.alertname, "rule": rule.name, "outlet": outlet_id, "pollutant": pollutant,
                      "enterprise": outlet.enterprise if outlet else "", "team": rule.team, "severity": rule.severity}
            obs = self.observe(conn, rule, labels, hour_end, Period(j.verdict, j.value, j.threshold, j.reason), now,
                               rule.for_hours, rule.resolve_after_hours)
            if obs.unchanged:
                if j.verdict == "exceeded" and self._on_case(obs.before, hour_end):
                    # recomputed (late data) but still exceeded: the case keeps the latest numbers
                    # and minutes (the store audits only a real change; a redelivery changes nothing)
                    store.record_exceeded_hour(conn, self._stack_hour(record, hour_end, True), now, self.policy)
                continue
            case_id = self._case_effects(conn, rule, record, obs, hour_end, now)
            after = obs.after
            if case_id is not None:
                after = replace(after, case_id=case_id)
                effects.cases.add(case_id)
            obs = replace(obs, after=after)
            self._commit(conn, obs, self._stack_annotations(after, record, j), effects)
        return effects

    @staticmethod
    def _on_case(st: AlertState | None, hour_end: datetime) -> bool:
        """Whether an exceeded hour belongs to an episode that fired (so its case holds it)."""
        if st is None or st.case_id is None or st.fired_at is None or st.active_since is None:
            return False
        return st.active_since <= hour_end and (st.state == "firing" or st.resolved_at is None or hour_end < st.resolved_at)

    def _stack_hour(self, record: dict[str, Any], hour_end: datetime, exceeded: bool) -> store.StackHour:
        outlet_id, pollutant = str(record["outlet"]), str(record["pollutant"])
        outlet = self.registry.outlets.get(outlet_id)
        minutes = self._evidence.get((outlet_id, pollutant, hour_end)) if self._evidence else None
        if minutes is None:
            minutes = self.minutes.minutes(outlet_id, pollutant, hour_end) if self.minutes is not None else []
        ref = outlet.ref_o2 if outlet is not None else REFERENCE_O2["coal"]
        return store.StackHour(
            outlet=outlet_id, enterprise=outlet.enterprise if outlet else "", permit=(outlet.permit or None) if outlet else None,
            pollutant=pollutant, limit=float(record.get("limit") or 0.0), limit_source=str(record.get("limit_source") or ""),
            reference_o2=ref, hour_end=hour_end, avg=record.get("avg"), avg_o2corr=record.get("avg_o2corr"),
            o2=record.get("o2") if record.get("o2") is not None else hour_o2(minutes),
            valid_minutes=int(record.get("valid_minutes") or 0), exceeded=exceeded, minutes=minutes)

    def _case_effects(self, conn: Connection, rule: StackExceedanceRule, record: dict[str, Any], obs: Observed,
                      hour_end: datetime, now: datetime) -> int | None:
        """Open or join the case for exceeded hours of a firing episode; withdraw an hour recomputed
        as no longer exceeded. Returns the case id touched, if any."""
        case_id = obs.before.case_id if obs.before is not None else None
        old = obs.periods_before.get(hour_end)
        new = obs.periods[hour_end]
        if old is not None and old.verdict == "exceeded" and new.verdict != "exceeded":
            touched = store.record_compliant_hour(conn, self._stack_hour(record, hour_end, False), now)
            case_id = touched if touched is not None else case_id
        just_fired = (obs.notify is not None and obs.after.fired_at is not None
                      and (obs.before is None or obs.before.state != "firing"))
        if just_fired:  # every exceeded hour of the episode (with `for` > 1 the earlier ones were pending)
            since = obs.after.active_since or hour_end
            hours = [t for t, p in obs.periods.items() if p.verdict == "exceeded" and t >= since]
        elif obs.after.state == "firing" and new.verdict == "exceeded" and (old is None or old.verdict != "exceeded"):
            hours = [hour_end]
        else:
            hours = []
        for t in sorted(hours):
            # only the hour in hand has its record; earlier hours of the episode are in the case
            # already unless the episode just started firing, when they are fetched again
            rec = record if t == hour_end else self._earlier_record(conn, record, t)
            if rec is None:
                continue
            case_id = store.record_exceeded_hour(conn, self._stack_hour(rec, t, True), now, self.policy)
        return case_id

    def _earlier_record(self, conn: Connection, record: dict[str, Any], t: datetime) -> dict[str, Any] | None:
        """An earlier exceeded hour of a `for` > 1 episode (pending before, no case yet): its
        numbers come from InfluxDB `stack_hourly` through the minute source when it can."""
        fetch = getattr(self.minutes, "hourly", None)
        if fetch is None:
            return None
        return fetch(str(record["outlet"]), str(record["pollutant"]), t)

    def _stack_annotations(self, st: AlertState, record: dict[str, Any], j: Judgement) -> dict[str, str]:
        pollutant = str(record["pollutant"])
        unit = POLLUTANT_UNITS.get(pollutant, "mg/m³")
        name = POLLUTANT_NAMES.get(pollutant, pollutant)
        ent = st.labels.get("enterprise") or st.labels["outlet"]
        value = st.value if st.value is not None else j.value
        limit = st.threshold if st.threshold is not None else j.threshold
        v = f"{value:.1f}" if value is not None else "-"
        lim = f"{limit:g}" if limit is not None else "-"
        when = china_hour(st.active_since) if st.active_since else "-"
        if st.state == "resolved":
            summary = (f"{ent} 排口 {st.labels['outlet']} {name} 已恢复达标：折算浓度小时均值 {v} {unit}，"
                       f"限值 {lim} {unit}（{china_hour(st.resolved_at) if st.resolved_at else '-'}）")
        else:
            summary = (f"{ent} 排口 {st.labels['outlet']} {name} 折算浓度小时均值 {v} {unit}，超过限值 {lim} {unit}"
                       f"（{record.get('limit_source') or ''}，自 {when} 起）")
        ann = {"summary": summary, "value": v, "limit": lim}
        if st.case_id is not None:
            ann["case_url"] = self.case_url_template.format(case_id=st.case_id)
        return ann

    # --- ambient: aq/v1/derived/aqi/{station} ---
    def aqi_record(self, conn: Connection, record: dict[str, Any], now: datetime,
                   history: list[float | None] | None = None) -> Effects:
        """`history`: the station's hourly AQI ending at this hour (oldest first), when the
        caller read it before opening the transaction; else read through `aqi_history`."""
        effects = Effects()
        station, standard = str(record["station"]), str(record.get("standard", ""))
        t = parse_time(record["time"])
        period = record.get("period")
        if period == "hour":
            for rule in self.rules.of_kind("aqi_hourly"):
                if standard in rule.standards:
                    effects.add(self._ambient(conn, rule, station, standard, t, judge_aqi_hour(rule, record), now,
                                              rule.for_hours, rule.resolve_after_hours))
            for rule in self.rules.of_kind("aqi_watch"):
                if standard not in rule.standards:
                    continue
                if history is not None and len(history) >= rule.history_hours + 1:
                    series = history[-(rule.history_hours + 1):]
                elif self.aqi_history is not None:
                    series = self.aqi_history(station, standard, t, rule.history_hours)
                else:
                    continue
                for level, j in watch_levels(rule, series).items():
                    lv = next(x for x in rule.levels if x.level == level)
                    effects.add(self._ambient(conn, rule, station, standard, t, j, now, 1, 1,
                                              extra={"level": level, "severity": lv.severity}))
        elif period == "day":
            for rule in self.rules.of_kind("aqi_daily"):
                if standard in rule.standards:
                    effects.add(self._ambient(conn, rule, station, standard, t, judge_aqi_day(rule, record), now, 1, 1))
        return effects

    def _ambient(self, conn: Connection, rule: AqiHourlyRule | AqiDailyRule | AqiWatchRule, station: str, standard: str,
                 t: datetime, j: Judgement, now: datetime, for_n: int, resolve_after: int,
                 extra: dict[str, str] | None = None) -> Effects:
        effects = Effects(evaluations=1)
        labels = {"alertname": rule.alertname, "rule": rule.name, "station": station, "standard": standard,
                  "team": rule.team, "severity": rule.severity, **(extra or {})}
        obs = self.observe(conn, rule, labels, t, Period(j.verdict, j.value, j.threshold, j.reason), now, for_n,
                           resolve_after)
        if obs.unchanged:
            return effects
        name = self.registry.stations[station].name if station in self.registry.stations else ""
        who = f"{name}（{station}）" if name else station
        st = obs.after
        value = st.value if st.value is not None else j.value
        v = f"{value:g}" if value is not None else "-"
        lim = f"{j.threshold:g}" if j.threshold is not None else "-"
        if isinstance(rule, AqiWatchRule):
            text = (f"{who} 观测滚动24小时AQI {v}，达到{labels['level']}级重污染天气观测条件"
                    f"（观测数据，非官方预警）")
        elif isinstance(rule, AqiHourlyRule):
            text = (f"{who} 小时AQI {v}，已连续 {for_n} 小时达到{CATEGORY_NAMES.get(rule.category, rule.category)}"
                    f"及以上（{standard}）")
        else:
            text = f"{who} 日AQI {v}，超过 {lim}（{standard}，{t.astimezone(CHINA).date()}）"
        if st.state == "resolved":
            text = "已解除：" + text
        self._commit(conn, obs, {"summary": text, "value": v, "limit": lim}, effects)
        return effects

    # --- CaseDeadline: overdue deadlines of the case store ---
    def deadlines(self, conn: Connection, now: datetime, team: str = "inspectors") -> Effects:
        effects = Effects()
        current: set[str] = set()
        rule_name = "case_deadline"
        for d in store.overdue(conn, now):
            labels = {"alertname": "CaseDeadline", "rule": rule_name, "outlet": d.outlet, "pollutant": d.pollutant,
                      "enterprise": d.enterprise, "team": team, "severity": "warning", "deadline": d.kind,
                      "case_id": str(d.case_id)}
            fp = fingerprint(rule_name, labels)
            current.add(fp)
            stored = load_alert(conn, fp)
            effects.evaluations += 1
            if stored is not None and stored.state == "firing":
                continue
            url = self.case_url_template.format(case_id=d.case_id)
            kinds = {"reinspection": "复查", "enterprise_report": "企业超标报告"}
            ann = {"summary": f"案件 {d.case_id}（{d.enterprise} {d.outlet} {POLLUTANT_NAMES.get(d.pollutant, d.pollutant)}）"
                              f"{kinds.get(d.kind, d.kind)}期限 {china(d.due)} 已逾期",
                   "value": china(d.due), "limit": china(d.due), "case_url": url}
            st = AlertState(fp, rule_name, "CaseDeadline", labels, ann, "firing", d.due, d.due, None, None, None, None,
                            d.case_id, now)
            save_alert(conn, st, existed=stored is not None)
            effects.changed.append(st)
            effects.cases.add(d.case_id)
        for st in load_alerts(conn, rule_name, ["firing"]):
            if st.fingerprint not in current:  # met, or the case moved on
                done = replace(st, state="resolved", resolved_at=now, updated_at=now, last_sent_at=None)
                save_alert(conn, done, existed=True)
                effects.changed.append(done)
        return effects

    # --- data quality (the service's timer; inputs from InfluxDB) ---
    def silence(self, conn: Connection, rule: SilenceRule, last_seen: dict[str, datetime | None],
                stopped: set[str], now: datetime) -> Effects:
        effects = Effects()
        ids = self.registry.outlets if rule.measurement == "stack" else self.registry.stations
        key = "outlet" if rule.measurement == "stack" else "station"
        for ident in ids:
            j = judge_silence(rule, last_seen.get(ident), now, "停运" if ident in stopped else None)
            if j.verdict == "exceeded" and rule.measurement == "stack":
                # only a silent outlet costs a query: is it marked stopped (停运…)?
                mark = store.exempting_mark(conn, ident, "*", now - timedelta(minutes=rule.minutes), now,
                                            self._fault_cap)
                if mark is not None:
                    j = judge_silence(rule, last_seen.get(ident), now, mark.type)
            effects.add(self._dq(conn, rule, {key: ident}, now, j))
        return effects

    def stuck(self, conn: Connection, rule: StuckRule, series: dict[tuple[str, str], list[float | None]],
              now: datetime) -> Effects:
        effects = Effects()
        key = "outlet" if rule.measurement == "stack" else "station"
        for (ident, fieldname), values in series.items():
            effects.add(self._dq(conn, rule, {key: ident, "field": fieldname}, now, judge_stuck(rule, values)))
        return effects

    def valid_rate(self, conn: Connection, rule: ValidRateRule, outlet: str, day_start: datetime,
                   hours: list[dict[str, Any]], now: datetime) -> Effects:
        return self._dq(conn, rule, {"outlet": outlet}, day_start, judge_valid_rate(rule, hours), now=now)

    def _dq(self, conn: Connection, rule: Any, ident: dict[str, str], at: datetime, j: Judgement,
            now: datetime | None = None) -> Effects:
        effects = Effects(evaluations=1)
        now = now or at
        labels = {"alertname": rule.alertname, "rule": rule.name, **ident, "team": rule.team, "severity": rule.severity}
        if j.verdict == "not_judged":
            return effects  # neither fires nor resolves, and nothing to remember
        fp = fingerprint(rule.name, labels)
        stored = load_alert(conn, fp)
        # timer checks: the verdict is the state (the condition itself spans N minutes / readings)
        episode = Episode("firing", at, at, None, j.value, j.threshold) if j.verdict == "exceeded" else \
            Episode("resolved" if stored and stored.state == "firing" else "inactive", stored.active_since if stored else None,
                    stored.fired_at if stored else None, at if stored and stored.state == "firing" else None,
                    j.value, j.threshold)
        if stored is None and episode.state == "inactive":
            return effects
        after, notify = advance(stored or AlertState(fp, rule.name, rule.alertname, labels, {}), episode, now)
        metrics.EVALUATIONS.labels(rule.name).inc()
        what = ", ".join(f"{k} {v}" for k, v in ident.items())
        v = f"{j.value:g}" if j.value is not None else "-"
        lim = f"{j.threshold:g}" if j.threshold is not None else "-"
        texts = {"silence": f"{what} 已 {v} 分钟无数据（阈值 {lim} 分钟）",
                 "stuck": f"{what} 连续 {lim} 个读数不变（{v}）",
                 "valid_rate": f"{what} {at.astimezone(CHINA).date()} 有效传输率 {float(j.value or 0):.1%}，低于 {float(j.threshold or 0):.0%}"}
        text = texts.get(rule.kind, j.reason)
        if after.state == "resolved":
            text = "已恢复：" + text
        obs = Observed(stored, after, notify, {}, {}, False)
        if notify is None and stored is not None and after.state == stored.state:
            after = replace(after, annotations=stored.annotations)
            save_alert(conn, after, existed=True)
            return effects
        self._commit(conn, obs, {"summary": text, "value": v, "limit": lim}, effects)
        return effects
