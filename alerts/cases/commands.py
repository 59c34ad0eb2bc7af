"""`aqpipe cases ...` and `aqpipe marks ...`: the case store from the command line.

Every subcommand opens the configured case database (`cases.database_url`, default
DATA_DIR/cases.sqlite), brings it to the newest migration, and calls one function of
`alerts.cases.store` / `alerts.cases.marks` in one transaction. Exit status: 0 done,
1 no such case or mark, 2 refused (the reason on stderr) or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from alerts.cases import marks as marks_mod
from alerts.cases import store, workflow
from alerts.cases.db import make_engine, migrate
from alerts.cases.errors import CaseError, CaseNotFound, MarkNotFound
from alerts.cases.timeutil import CHINA
from aqpipe.cliutil import AddCommon, load_or_exit
from aqpipe.config import Config

EXIT_NOT_FOUND = 1
EXIT_REFUSED = 2

_TIME_HELP = "ISO 8601; without an offset it is China time (UTC+8), e.g. '2026-03-01 08:00'"


def _workflow_table() -> str:
    lines = ["workflow (from -> to: required fields; --date):"]
    for t in workflow.TRANSITIONS:
        need = ", ".join(t.requires) or "-"
        opt = f" [optional: {', '.join(t.optional)}]" if t.optional else ""
        when = f" [only after a re-inspection that found: {'/'.join(sorted(t.when_result))}]" if t.when_result else ""
        date_note = f"; --date {t.date}: {t.date_meaning}" if t.date else ""
        lines.append(f"  {t.from_state:<12} -> {t.to_state:<12} {t.action}: {need}{opt}{date_note}{when}")
    lines.append("fields:")
    for f in workflow.FIELDS.values():
        choices = f" ({'|'.join(f.choices)})" if f.choices else ""
        lines.append(f"  {f.name}{choices}: {f.help}")
    return "\n".join(lines)


def _mark_types_table() -> str:
    return ("mark types (key or Chinese name):\n" + "\n".join(
        f"  {t.key:<15} {t.label:<6} {'exempting' if t.exempting else 'informative only'} ({t.category})"
        for t in marks_mod.MARK_TYPES.values())
        + "\n\nfault (故障) marks exempt at most cases.fault_mark_hours_per_year hours per outlet and China year\n"
          "(unset: no cap); past it an hour is judged, and the output says the cap was used up.")


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    _register_cases(sub, add_common)
    _register_marks(sub, add_common)


def _register_cases(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("cases", help="enforcement cases: list, show, move along the workflow, export",
                       description="Enforcement cases opened by stack exceedances (alerts/README.md, "
                                   "'Enforcement cases'). The database is cases.database_url (default "
                                   "DATA_DIR/cases.sqlite).\n\n" + _workflow_table(), formatter_class=fmt)
    cs = p.add_subparsers(dest="cases_command", metavar="SUBCOMMAND", required=True)

    q = cs.add_parser("list", help="list cases (overdue deadlines first, then newest)",
                      description="List cases: those with an overdue deadline first, then newest first. "
                                  "--json prints one JSON object per line (the contract fields: id, kind, outlet, "
                                  "enterprise, permit, pollutant, limit, limit_source, reference_o2, status, "
                                  "opened_at, first/last_exceeded_hour, exceeded_hours, days_with_exceedance, "
                                  "hours, url, ...).")
    q.add_argument("--status", choices=list(workflow.STATES), help="only cases in this state")
    q.add_argument("--enterprise", help="only this enterprise (exact name)")
    q.add_argument("--outlet", help="only this outlet id")
    q.add_argument("--pollutant", help="only this pollutant (so2, nox, pm, ...)")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    add_common(q)
    q.set_defaults(func=_guard(cmd_list))

    q = cs.add_parser("show", help="one case: facts, hours, marks, deadlines, penalties, history",
                      description="Show one case. --json prints the whole case as one JSON object "
                                  "(without the minute data; `aqpipe cases export` has it).")
    q.add_argument("id", type=int, help="case id")
    q.add_argument("--json", action="store_true", help="JSON instead of text")
    add_common(q)
    q.set_defaults(func=_guard(cmd_show))

    q = cs.add_parser("transition", help="move a case to another workflow state (who, when, note, refs)",
                      description="Move case ID to STATE, recording who, when, a note and document references, "
                                  "in one transaction. A transition the workflow does not allow, or one missing a "
                                  "required field, is refused (exit 2) with the states the case may go to.\n\n"
                                  + _workflow_table()
                                  + "\n\nexample:\n  aqpipe cases transition 12 ordered --by 张三 --date 2026-03-05 "
                                    "--field doc_number=天环改〔2026〕8号 --field fine=200000 --ref 决定书.pdf",
                      formatter_class=fmt)
    q.add_argument("id", type=int, help="case id")
    q.add_argument("state", choices=list(workflow.STATES), metavar="STATE",
                   help="the state to go to: " + ", ".join(f"{k} ({s.label})" for k, s in workflow.STATES.items()))
    q.add_argument("--by", required=True, metavar="NAME", help="who makes the transition (recorded in the audit log)")
    q.add_argument("--note", default="", help="free text recorded with the transition")
    q.add_argument("--date", type=_date, metavar="YYYY-MM-DD",
                   help="the China date of the act (order served, re-inspection day, filing or closing date)")
    q.add_argument("--field", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the transition (repeatable): reason, case_number, result, outcome, fine, "
                        "doc_number, discharge_stopped, measures (a JSON list)")
    q.add_argument("--ref", action="append", default=[], metavar="REF",
                   help="a reference to a document (repeatable): a file name, a document number, a URL")
    add_common(q)
    q.set_defaults(func=_guard(cmd_transition))

    q = cs.add_parser("report", help="record that the enterprise's own exceedance report arrived",
                      description="Record the enterprise's exceedance report (排污许可管理条例 Art. 21): the date "
                                  "received meets its deadline (cases.enterprise_report_hours after the case opened).")
    q.add_argument("id", type=int, help="case id")
    q.add_argument("--by", required=True, metavar="NAME", help="who at the bureau records it")
    q.add_argument("--received", type=_time, metavar="TIME", help=f"when it arrived (default now); {_TIME_HELP}")
    q.add_argument("--note", default="")
    q.add_argument("--ref", action="append", default=[], metavar="REF", help="the report's reference (repeatable)")
    add_common(q)
    q.set_defaults(func=_guard(cmd_report))

    q = cs.add_parser("measure", help="record a measure decided on a running case (限产, 停产整治, 查封扣押 ...)",
                      description="Record a measure with its dates on a case that has not ended. Kinds: "
                                  + ", ".join(f"{k} ({v})" for k, v in workflow.MEASURE_KINDS.items()) + ".")
    q.add_argument("id", type=int, help="case id")
    q.add_argument("kind", help="the measure (key or Chinese name)")
    q.add_argument("--by", required=True, metavar="NAME")
    q.add_argument("--start", type=_date, metavar="YYYY-MM-DD")
    q.add_argument("--end", type=_date, metavar="YYYY-MM-DD")
    q.add_argument("--doc-number", help="the decision's document number")
    q.add_argument("--amount", type=float, help="yuan, for a fine")
    q.add_argument("--note", default="")
    q.add_argument("--ref", action="append", default=[], metavar="REF")
    add_common(q)
    q.set_defaults(func=_guard(cmd_measure))

    q = cs.add_parser("overdue", help="deadlines past due (re-inspection, enterprise report)",
                      description="Deadlines of open cases that are past due and neither met nor cancelled.")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    add_common(q)
    q.set_defaults(func=_guard(cmd_overdue))

    q = cs.add_parser("export", help="export a case with its evidence (json or csv)",
                      description="Export a case: json = everything, the minute data behind each hour included; "
                                  "csv = one row per hour, its minute data as a JSON array in the last column.")
    q.add_argument("id", type=int, help="case id")
    q.add_argument("--format", choices=["json", "csv"], required=True)
    q.add_argument("--output", "-o", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    add_common(q)
    q.set_defaults(func=_guard(cmd_export))


def _register_marks(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("marks", help="marks (标记): periods taken out of judgement; add, list, remove",
                       description="Marks (标记, 生态环境部公告 2022 年第 21 号): interval records that take an "
                                   "outlet's hours out of judgement. Every add and remove is audited, and re-evaluates "
                                   "the case hours the mark covers.\n\n" + _mark_types_table(), formatter_class=fmt)
    ms = p.add_subparsers(dest="marks_command", metavar="SUBCOMMAND", required=True)

    q = ms.add_parser("add", help="add a mark", formatter_class=fmt,
                      description="Add a mark over [start, end) for an outlet, one pollutant or all of them.\n\n"
                                  + _mark_types_table()
                                  + "\n\nexample:\n  aqpipe marks add --outlet TS-GAS-01 --type 停运 --start "
                                    "'2026-03-01 08:00' --end '2026-03-01 14:00' --reason 计划检修 --by 王五 "
                                    "--evidence 检修单-0301.pdf")
    q.add_argument("--outlet", required=True)
    q.add_argument("--pollutant", help="one pollutant (default: all of the outlet's)")
    q.add_argument("--type", required=True, help="the mark type (key or Chinese name, see above)")
    q.add_argument("--start", required=True, type=_time, metavar="TIME", help=_TIME_HELP)
    q.add_argument("--end", type=_time, metavar="TIME", help=f"exclusive; omit for a mark still running; {_TIME_HELP}")
    q.add_argument("--reason", required=True)
    q.add_argument("--evidence", metavar="REF", help="a reference to the evidence (file, document number, URL)")
    q.add_argument("--by", required=True, metavar="NAME", help="who enters the mark")
    q.add_argument("--json", action="store_true")
    add_common(q)
    q.set_defaults(func=_guard(cmd_mark_add))

    q = ms.add_parser("list", help="list marks (newest first)")
    q.add_argument("--outlet")
    q.add_argument("--pollutant", help="marks of this pollutant and marks of all pollutants")
    q.add_argument("--all", action="store_true", help="include removed marks")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    add_common(q)
    q.set_defaults(func=_guard(cmd_mark_list))

    q = ms.add_parser("remove", help="remove a mark (soft: it and its history stay, audited)")
    q.add_argument("id", type=int, help="mark id")
    q.add_argument("--by", required=True, metavar="NAME")
    q.add_argument("--reason", required=True, help="why (e.g. 现场核实标记不实)")
    q.add_argument("--json", action="store_true")
    add_common(q)
    q.set_defaults(func=_guard(cmd_mark_remove))


# --- argument types ------------------------------------------------------------------------


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time (ISO 8601, e.g. 2026-03-01T08:00+08:00): {text!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=CHINA)).astimezone(timezone.utc)


def _fields(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CaseError(f"--field {pair!r}: write KEY=VALUE (e.g. --field case_number=天环立〔2026〕15号)")
        out[key.strip()] = value
    return out


# --- commands ----------------------------------------------------------------------------


def _guard(fn: Callable[[argparse.Namespace, Config, Engine], int]) -> Callable[[argparse.Namespace], int]:
    """Load the config, open and migrate the database, map store errors to exit codes."""

    def run(args: argparse.Namespace) -> int:
        cfg = load_or_exit(args.config)
        engine = make_engine(cfg)
        try:
            migrate(engine)
            return fn(args, cfg, engine)
        except (CaseNotFound, MarkNotFound) as e:
            print(f"aqpipe: {e}", file=sys.stderr)
            return EXIT_NOT_FOUND
        except CaseError as e:
            print(f"aqpipe: refused: {e}", file=sys.stderr)
            return EXIT_REFUSED
        finally:
            engine.dispose()

    return run


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _cn(iso: str | None) -> str:
    """An ISO time as China local time for people reading text output."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def _hour(hour_end: str) -> str:
    """The hour ending at `hour_end` as the bureau reads it: 2026-03-01 09:00–10:00 (China time)."""
    end = datetime.fromisoformat(hour_end).astimezone(CHINA)
    start = end - timedelta(hours=1)
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}"


def _url(cfg: Config) -> str:
    return cfg.alerts.case_url_template


def cmd_list(args, cfg: Config, engine: Engine) -> int:
    with engine.connect() as conn:
        views = store.list_cases(conn, _url(cfg), status=args.status, enterprise=args.enterprise,
                                 outlet=args.outlet, pollutant=args.pollutant)
        rows = [v.to_json() for v in views]
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if not rows:
        print("no cases")
        return 0
    print(f"{'id':>5}  {'status':<16} {'outlet':<14} {'poll':<5} {'hours':>5} {'days':>4}  "
          f"{'first exceeded (CST)':<17} {'last':<17} enterprise")
    for r in rows:
        flag = " OVERDUE" if r["overdue"] else ""
        print(f"{r['id']:>5}  {r['status'] + ' ' + r['status_label']:<16} {r['outlet']:<14} {r['pollutant']:<5} "
              f"{r['exceeded_hours']:>5} {r['days_with_exceedance']:>4}  {_cn(r['first_exceeded_hour']):<17} "
              f"{_cn(r['last_exceeded_hour']):<17} {r['enterprise']}{flag}")
    return 0


def cmd_show(args, cfg: Config, engine: Engine) -> int:
    with engine.connect() as conn:
        c = store.get_case(conn, args.id, _url(cfg)).to_json()
    if args.json:
        print(json.dumps(c, ensure_ascii=False))
        return 0
    print(_render(c))
    return 0


def _render(c: dict[str, Any]) -> str:
    out = [f"case {c['id']}  {c['status']} ({c['status_label']})" + ("  OVERDUE" if c["overdue"] else ""),
           f"  url           {c['url']}",
           f"  enterprise    {c['enterprise']}   permit {c['permit'] or '-'}",
           f"  outlet        {c['outlet']}   pollutant {c['pollutant']}",
           f"  limit         {c['limit']:g} mg/m3 ({c['limit_source']}) at reference O2 {c['reference_o2']:g} %",
           f"  opened        {_cn(c['opened_at'])} CST" + (f"   case number {c['case_number']}" if c["case_number"] else ""),
           f"  exceeded      {c['exceeded_hours']} h on {c['days_with_exceedance']} day(s), "
           f"{_cn(c['first_exceeded_hour'])} .. {_cn(c['last_exceeded_hour'])} CST (hour ends)"
           + (f"; {c['marked_hours']} h marked" if c["marked_hours"] else "")]
    if c["outcome"]:
        out.append(f"  outcome       {c['outcome']}")
    out.append(f"  next          {', '.join(c['allowed_next']) or '(ended)'}")
    out.append(f"  {'hour (CST)':<22}  {'avg':>6} {'O2-corr':>8} {'O2 %':>5} {'valid':>6}  verdict")
    rows = [(h["hour_end"], f"{_f(h['avg']):>6} {_f(h['avg_o2corr']):>8} {_f(h['o2']):>5} {h['valid_minutes']:>6}  "
                            f"{h['verdict']}" + (f" {h['mark_label']} (mark {h['mark_id']})" if h["mark_id"] else "")
                            + (" (故障 fault mark: annual fault-hour cap used up, judged)" if h.get("fault_cap_reached")
                               else ""))
            for h in c["hours"]]
    rows += [(h["hour_end"], f"{'':>28}  not judged: {h['reason'] or '-'}") for h in c["not_judged_hours"]]
    for hour_end, text in sorted(rows):
        out.append(f"  {_hour(hour_end)}  {text}")
    if c["marks"]:
        out.append("marks")
        for m in c["marks"]:
            state = "" if m["active"] else f"  REMOVED by {m['removed_by']}: {m['removed_reason']}"
            out.append(f"  {m['id']}: {m['type_label']} {m['pollutant'] or 'all'} {_cn(m['start'])} .. "
                       f"{_cn(m['end'])}  {m['reason']} (by {m['created_by']}){state}")
    out.append("deadlines")
    for d in c["deadlines"]:
        state = ("met " + _cn(d["met_at"]) if d["met_at"] else "cancelled" if d["cancelled_at"]
                 else "OVERDUE" if d["overdue"] else "open")
        out.append(f"  {d['kind']:<18} due {d['due_date'] or _cn(d['due'])}  {state}")
    for p in c["penalties"]:
        amount = f", {_yuan(p['total_amount'])}" if p["total_amount"] is not None else ""
        stopped = " (discharge stopped: none)" if p["discharge_stopped"] else ""
        cite = f"  [{p['citation']['law']} {p['citation']['article']}]" if p["citation"] else ""
        out.append(f"penalty  按日连续处罚 {p['days']} day(s): {p['served_date']} served, "
                   f"{p['reinspected_date']} re-inspected{amount}{stopped}{cite}")
    for m in c["measures"]:
        amount = f" {_yuan(m['amount'])}" if m["amount"] is not None else ""
        out.append(f"measure  {m['label']} {m['start_date'] or ''}..{m['end_date'] or ''} "
                   f"{m['doc_number'] or ''}{amount}".rstrip())
    out.append("history")
    for e in c["history"]:
        move = f" {e['from_state']} -> {e['to_state']}" if e["from_state"] else ""
        extra = f" {json.dumps(e['data'], ensure_ascii=False)}" if e["action"] == "transition" and e["data"] else ""
        refs = f" refs: {', '.join(e['refs'])}" if e["refs"] else ""
        note = f" — {e['note']}" if e["note"] else ""
        out.append(f"  {_cn(e['at'])}  {e['by']}: {e['action']}{move}"
                   f"{' on ' + e['date'] if e['date'] else ''}{extra}{note}{refs}")
    if c["citations"]:
        out.append("legal basis (by the date of the first exceeded hour)")
        for ct in c["citations"]:
            conf = " (medium confidence)" if ct["confidence"] != "high" else ""
            out.append(f"  {ct['topic']}: {ct['law']} {ct['article']}{conf}")
    return "\n".join(out)


def _yuan(x: float) -> str:
    return f"{x:,.2f}".removesuffix(".00") + " yuan"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def cmd_transition(args, cfg: Config, engine: Engine) -> int:
    with engine.begin() as conn:
        c = store.transition(conn, args.id, args.state, args.by, note=args.note, date=args.date,
                             fields=_fields(args.field), refs=args.ref, at=_now(),
                             policy=store.CasePolicy.from_config(cfg.cases), url_template=_url(cfg)).to_json()
    print(f"case {c['id']}: now {c['status']} ({c['status_label']}); next: {', '.join(c['allowed_next']) or '(ended)'}")
    for p in c["penalties"][-1:]:
        if args.state == "reinspected" and p["reinspected_date"] == (args.date.isoformat() if args.date else None):
            print(f"daily penalty: {p['days']} day(s) from the day after {p['served_date']} through "
                  f"{p['reinspected_date']}" + (f", {_yuan(p['total_amount'])}" if p["total_amount"] is not None else ""))
    for d in c["deadlines"]:
        if not d["met_at"] and not d["cancelled_at"]:
            print(f"deadline: {d['kind']} due {d['due_date'] or _cn(d['due'])}{' (OVERDUE)' if d['overdue'] else ''}")
    return 0


def cmd_report(args, cfg: Config, engine: Engine) -> int:
    now = _now()
    with engine.begin() as conn:
        store.record_enterprise_report(conn, args.id, args.received or now, args.by, at=now, note=args.note,
                                       refs=args.ref)
    print(f"case {args.id}: enterprise report recorded")
    return 0


def cmd_measure(args, cfg: Config, engine: Engine) -> int:
    with engine.begin() as conn:
        mid = store.record_measure(conn, args.id, args.kind, args.by, at=_now(), start=args.start, end=args.end,
                                   doc_number=args.doc_number, amount=args.amount, note=args.note, refs=args.ref)
    print(f"case {args.id}: measure {mid} recorded")
    return 0


def cmd_overdue(args, cfg: Config, engine: Engine) -> int:
    with engine.connect() as conn:
        late = store.overdue(conn, _now())
    for d in late:
        if args.json:
            print(json.dumps(d.to_json(), ensure_ascii=False))
        else:
            print(f"case {d.case_id}: {d.kind} due {d.due_date or _cn(d.due.isoformat())} "
                  f"({d.outlet} {d.pollutant}, {d.enterprise})")
    if not late and not args.json:
        print("nothing overdue")
    return 0


def cmd_export(args, cfg: Config, engine: Engine) -> int:
    with engine.connect() as conn:
        text = store.export_case(conn, args.id, args.format, _url(cfg))
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"case {args.id} written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_mark_add(args, cfg: Config, engine: Engine) -> int:
    with engine.begin() as conn:
        m = marks_mod.add_mark(conn, outlet=args.outlet, pollutant=args.pollutant, type=args.type, start=args.start,
                               end=args.end, reason=args.reason, by=args.by, at=_now(), evidence_ref=args.evidence,
                               fault_cap=cfg.cases.fault_mark_hours_per_year)
        changed = marks_mod.mark_history(conn, m.id)[-1]["data"]["hours"]
    _print_mark(m, args.json, f"mark {m.id} added; {len(changed)} case hour(s) re-evaluated", changed)
    return 0


def cmd_mark_list(args, cfg: Config, engine: Engine) -> int:
    with engine.connect() as conn:
        found = marks_mod.list_marks(conn, outlet=args.outlet, pollutant=args.pollutant, include_removed=args.all)
    for m in found:
        _print_mark(m, args.json)
    if not found and not args.json:
        print("no marks")
    return 0


def cmd_mark_remove(args, cfg: Config, engine: Engine) -> int:
    with engine.begin() as conn:
        m = marks_mod.remove_mark(conn, args.id, by=args.by, reason=args.reason, at=_now(),
                                  fault_cap=cfg.cases.fault_mark_hours_per_year)
        changed = marks_mod.mark_history(conn, m.id)[-1]["data"]["hours"]
    _print_mark(m, args.json, f"mark {m.id} removed; {len(changed)} case hour(s) re-evaluated", changed)
    return 0


def _print_mark(m: marks_mod.Mark, as_json: bool, summary: str = "",
                changed: list[dict[str, Any]] | None = None) -> None:
    j = m.to_json()
    if as_json:
        print(json.dumps(j if changed is None else {**j, "reevaluated_hours": changed}, ensure_ascii=False))
        return
    state = "" if m.active else f"  REMOVED {_cn(j['removed_at'])} by {m.removed_by}: {m.removed_reason}"
    print(f"{m.id:>5}  {m.outlet:<14} {m.pollutant or 'all':<5} {j['type_label']:<6} "
          f"{'exempting' if m.exempting else 'info':<9} {_cn(j['start'])} .. {_cn(j['end'])} CST  "
          f"{m.reason} (by {m.created_by}{', evidence ' + m.evidence_ref if m.evidence_ref else ''}){state}")
    if summary:
        print(summary)
    capped = [c for c in changed or [] if c.get("fault_cap_reached")]
    if capped:
        print(f"{len(capped)} hour(s) judged: the annual fault-mark cap (cases.fault_mark_hours_per_year) is used up: "
              + ", ".join(f"case {c['case_id']} {_cn(c['hour_end'])}" for c in capped))
