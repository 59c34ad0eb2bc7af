"""Alert rules as data: the schema of rules.toml, loading it, and the verdict of each kind.

A rule file is a list of `[[rule]]` tables (alerts/rules.toml is the shipped default,
`alerts.rules_file` overrides it). Each kind has its own pydantic model, so a wrong key
or value is refused with the rule's name and the key (`RulesError`), by `aqpipe
check-config` as well as at start.

Verdicts are pure functions of one record (and, where a rule needs it, a short history):
`exceeded`, `compliant` or `not_judged` with a reason. The lifecycle (alerts/lifecycle.py)
turns a sequence of verdicts into pending / firing / resolved.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from aqpipe.config import Config
from aqpipe.errors import ConfigError

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.toml")

Verdict = Literal["exceeded", "compliant", "not_judged"]
Team = Literal["inspectors", "operations"]
Severity = Literal["info", "warning", "critical"]


class RulesError(ConfigError):
    """A rules file that cannot be used; `key` is `rules[<name>].<key>` (or the file)."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    alertname: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    team: Team
    severity: Severity = "warning"
    enabled: bool = True


class StackExceedanceRule(_Rule):
    kind: Literal["stack_exceedance"]
    for_hours: int = Field(1, ge=1, le=72)
    resolve_after_hours: int = Field(1, ge=1, le=72)
    min_valid_minutes: int = Field(45, ge=1, le=60)
    pollutants: list[str] = Field(default_factory=list)  # empty: every pollutant with a limit


class AqiHourlyRule(_Rule):
    kind: Literal["aqi_hourly"]
    category: int = Field(5, ge=1, le=6)
    for_hours: int = Field(1, ge=1, le=168)
    resolve_after_hours: int = Field(1, ge=1, le=72)
    standards: list[str] = Field(default_factory=lambda: ["cn-2012", "cn-2026"], min_length=1)


class AqiDailyRule(_Rule):
    kind: Literal["aqi_daily"]
    above: int = Field(200, ge=0, le=500)
    standards: list[str] = Field(default_factory=lambda: ["cn-2012", "cn-2026"], min_length=1)


class WatchCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    above: int = Field(ge=0, le=500)  # rolling 24-h AQI strictly above
    hours: int = Field(ge=1, le=240)  # for at least this many consecutive hours


class WatchLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: str
    severity: Severity = "warning"
    any: list[WatchCondition] = Field(default_factory=list)
    all: list[WatchCondition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> "WatchLevel":
        if bool(self.any) == bool(self.all):
            raise ValueError("a level needs exactly one of `any` or `all` (a list of {above, hours})")
        return self


class AqiWatchRule(_Rule):
    kind: Literal["aqi_watch"]
    min_hours: int = Field(20, ge=1, le=24)  # hourly values needed in the 24 h for a rolling value
    standards: list[str] = Field(default_factory=lambda: ["cn-2012", "cn-2026"], min_length=1)
    levels: list[WatchLevel] = Field(min_length=1)

    @property
    def history_hours(self) -> int:
        """Hourly AQI values the rule needs behind the current hour."""
        return 23 + max(c.hours for lv in self.levels for c in (*lv.any, *lv.all))


class SilenceRule(_Rule):
    kind: Literal["silence"]
    measurement: Literal["stack", "ambient"]
    minutes: int = Field(30, ge=1)


class ValidRateRule(_Rule):
    kind: Literal["valid_rate"]
    below: float = Field(0.90, gt=0, le=1)
    min_valid_minutes: int = Field(45, ge=1, le=60)


class StuckRule(_Rule):
    kind: Literal["stuck"]
    measurement: Literal["stack", "ambient"]
    fields: list[str] = Field(min_length=1)
    readings: int = Field(30, ge=2, le=10000)


Rule = Annotated[Union[StackExceedanceRule, AqiHourlyRule, AqiDailyRule, AqiWatchRule, SilenceRule,
                       ValidRateRule, StuckRule], Field(discriminator="kind")]
_RULE = TypeAdapter(Rule)
KINDS = ("stack_exceedance", "aqi_hourly", "aqi_daily", "aqi_watch", "silence", "valid_rate", "stuck")


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Any, ...]
    source: Path

    def of_kind(self, kind: str) -> list[Any]:
        return [r for r in self.rules if r.kind == kind and r.enabled]

    def by_name(self, name: str) -> Any:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)


def parse_rules(doc: dict[str, Any], source: Path) -> RuleSet:
    """Validate a parsed rules document; RulesError names the rule and the key."""
    extra = set(doc) - {"rule"}
    if extra:
        raise RulesError(str(source), f"unknown top-level key(s) {sorted(extra)}: a rules file holds [[rule]] tables")
    raw = doc.get("rule", [])
    if not isinstance(raw, list):
        raise RulesError(str(source), "`rule` must be an array of tables ([[rule]])")
    rules = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        label = f"rules[{name}]" if isinstance(name, str) else f"rules[#{i + 1}]"
        if isinstance(item, dict) and item.get("kind") not in KINDS:
            raise RulesError(f"{label}.kind", f"{item.get('kind')!r} is not a rule kind; choose from {', '.join(KINDS)} "
                                              f"(in {source})")
        try:
            rule = _RULE.validate_python(item)
        except ValidationError as e:
            err = e.errors()[0]
            # loc starts with the union tag (the kind); drop it, keep the key path
            loc = [str(p) for p in err["loc"] if p != item.get("kind")]
            key = ".".join(loc) or "?"
            got = err.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            raise RulesError(f"{label}.{key}", f"{err['msg']}{got_text} (in {source})") from e
        if rule.name in seen:
            raise RulesError(f"{label}.name", f"{rule.name!r} appears twice (in {source})")
        seen.add(rule.name)
        rules.append(rule)
    return RuleSet(tuple(rules), source)


def load_rules(path: Path | None = None) -> RuleSet:
    """Read and validate a rules file (the shipped default when `path` is None)."""
    source = path or DEFAULT_RULES_FILE
    try:
        with open(source, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError as e:
        raise RulesError("alerts.rules_file", f"no such file: {source}") from e
    except tomllib.TOMLDecodeError as e:
        raise RulesError("alerts.rules_file", f"{source} is not valid TOML: {e}") from e
    return parse_rules(doc, source)


def rules_for(cfg: Config) -> RuleSet:
    return load_rules(cfg.alerts.rules_file)


def check_rules(cfg: Config) -> str:
    """The `aqpipe check-config` hook: raises RulesError, or says what was validated."""
    rs = rules_for(cfg)
    enabled = [r.name for r in rs.rules if r.enabled]
    return f"alert rules: {len(enabled)} enabled of {len(rs.rules)} from {rs.source} ({', '.join(enabled)})"


# ---------------------------------------------------------------------------------------
# Verdicts: one record in, (verdict, reason) out.

@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str  # why: "above limit", "stopped", "exempting mark 停运", "12 valid minutes"...
    value: float | None = None
    threshold: float | None = None


def judge_stack_hour(rule: StackExceedanceRule, record: dict[str, Any], exempt_by: str | None = None) -> Judgement:
    """The verdict on one derived stack record (aq/v1/derived/stack/{outlet}).

    Not judged (neither fires nor resolves): an exempting mark covers the hour; the
    aggregator made no judgement (`exceeded` null: too few valid minutes, no valid O2,
    no limit); fewer valid minutes than the rule asks; `complete` false when present;
    the plant stopped or starting (not-running minutes leave too few valid ones).
    """
    value, limit = record.get("avg_o2corr"), record.get("limit")
    valid = int(record.get("valid_minutes") or 0)
    not_running = int(record.get("not_running_minutes") or 0)
    if exempt_by:
        return Judgement("not_judged", f"exempting mark {exempt_by}", value, limit)
    if record.get("complete") is False:
        return Judgement("not_judged", "hour incomplete", value, limit)
    if valid < rule.min_valid_minutes:
        why = "stopped or starting" if not_running > 60 - rule.min_valid_minutes else "flagged or missing minutes"
        return Judgement("not_judged", f"{why} ({valid} valid minutes)", value, limit)
    if record.get("exceeded") is None or value is None or limit is None:
        return Judgement("not_judged", "no judgement (no valid O2 or no limit)", value, limit)
    if record["exceeded"]:
        return Judgement("exceeded", "above limit", value, limit)
    return Judgement("compliant", "within limit", value, limit)


def judge_aqi_hour(rule: AqiHourlyRule, record: dict[str, Any]) -> Judgement:
    aqi, category = record.get("aqi"), record.get("category")
    if aqi is None or category is None:
        return Judgement("not_judged", "no AQI", None, float(rule.category))
    verdict: Verdict = "exceeded" if int(category) >= rule.category else "compliant"
    return Judgement(verdict, f"category {category}", float(aqi), float(rule.category))


def judge_aqi_day(rule: AqiDailyRule, record: dict[str, Any]) -> Judgement:
    aqi = record.get("aqi")
    if aqi is None:
        return Judgement("not_judged", "no AQI", None, float(rule.above))
    return Judgement("exceeded" if aqi > rule.above else "compliant", f"AQI {aqi}", float(aqi), float(rule.above))


def rolling_24h(hourly: Sequence[float | None], min_hours: int) -> list[float | None]:
    """Rolling 24-hour value at each hour: the mean of the valid hourly AQI values in the 24
    hours ending there (at least `min_hours` of them), None otherwise."""
    out: list[float | None] = []
    for i in range(len(hourly)):
        window = [v for v in hourly[max(0, i - 23):i + 1] if v is not None]
        out.append(sum(window) / len(window) if len(window) >= min_hours else None)
    return out


def _run_length(rolling: Sequence[float | None], above: int) -> int:
    """Consecutive hours, ending at the last one, with the rolling value above `above`."""
    n = 0
    for v in reversed(rolling):
        if v is None or v <= above:
            break
        n += 1
    return n


def watch_levels(rule: AqiWatchRule, hourly: Sequence[float | None]) -> dict[str, Judgement]:
    """Each level's verdict at the last hour of `hourly` (oldest first, one value per hour,
    None where missing): reached when its conditions hold for their hours."""
    rolling = rolling_24h(hourly, rule.min_hours)
    current = rolling[-1] if rolling else None
    out = {}
    for lv in rule.levels:
        held = [_run_length(rolling, c.above) >= c.hours for c in (lv.any or lv.all)]
        reached = any(held) if lv.any else all(held)
        first = (lv.any or lv.all)[0]
        if current is None:
            out[lv.level] = Judgement("not_judged", "too few hourly values", None, float(first.above))
        else:
            out[lv.level] = Judgement("exceeded" if reached else "compliant",
                                      "observed rolling 24-h AQI", round(current, 1), float(first.above))
    return out


def judge_silence(rule: SilenceRule, last_seen: datetime | None, now: datetime, exempt_by: str | None = None) -> Judgement:
    if exempt_by:
        return Judgement("not_judged", f"exempting mark {exempt_by}")
    if last_seen is None:
        return Judgement("not_judged", "never seen")  # a device never seen is a registry matter, not a silence
    minutes = (now - last_seen).total_seconds() / 60
    verdict: Verdict = "exceeded" if minutes >= rule.minutes else "compliant"
    return Judgement(verdict, f"silent {minutes:.0f} min", round(minutes, 1), float(rule.minutes))


def judge_valid_rate(rule: ValidRateRule, hours: Sequence[dict[str, Any]], hours_in_day: int = 24) -> Judgement:
    """有效传输率 of one outlet's China day from its derived stack records (one per hour and
    pollutant; an hour counts as valid when any pollutant of it is). Hours the plant was
    stopped throughout are not due; a missing hour is due and not valid."""
    by_hour: dict[str, list[dict[str, Any]]] = {}
    for r in hours:
        by_hour.setdefault(str(r.get("time")), []).append(r)
    stopped = sum(1 for rs in by_hour.values()
                  if all(int(r.get("not_running_minutes") or 0) > 60 - rule.min_valid_minutes for r in rs))
    valid = sum(1 for rs in by_hour.values() if any(int(r.get("valid_minutes") or 0) >= rule.min_valid_minutes for r in rs))
    due = hours_in_day - stopped
    if due <= 0:
        return Judgement("not_judged", "stopped all day")
    rate = valid / due
    return Judgement("exceeded" if rate < rule.below else "compliant", f"{valid} valid of {due} due hours",
                     round(rate, 4), rule.below)


def judge_stuck(rule: StuckRule, values: Sequence[float | None]) -> Judgement:
    """The last `rule.readings` values (newest last) all equal: the analyser is frozen."""
    tail = [v for v in values if v is not None][-rule.readings:]
    if len(tail) < rule.readings:
        return Judgement("not_judged", f"{len(tail)} readings", None, float(rule.readings))
    stuck = all(v == tail[0] for v in tail)
    return Judgement("exceeded" if stuck else "compliant", f"{rule.readings} readings equal" if stuck else "varying",
                     tail[-1], float(rule.readings))
