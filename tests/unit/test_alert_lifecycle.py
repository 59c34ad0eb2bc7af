"""alerts/lifecycle.py: pending (`for`) -> firing -> resolved, replayed from per-hour verdicts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alerts.lifecycle import AlertState, Period, advance, changed_verdicts, fingerprint, replay

T0 = datetime(2026, 11, 24, 2, tzinfo=timezone.utc)
EXC = Period("exceeded", 80.0, 50.0)
OK = Period("compliant", 20.0, 50.0)
NJ = Period("not_judged", None, 50.0, "stopped")


def hours(*verdicts: Period) -> dict[datetime, Period]:
    return {T0 + timedelta(hours=i): v for i, v in enumerate(verdicts)}


def blank() -> AlertState:
    return AlertState("fp", "stack_exceedance", "StackExceedance", {"outlet": "o1"}, {})


def test_fingerprint_is_stable_and_depends_on_rule_and_labels_not_their_order():
    a = fingerprint("stack_exceedance", {"outlet": "o1", "pollutant": "so2"})
    assert a == fingerprint("stack_exceedance", {"pollutant": "so2", "outlet": "o1"})
    assert a == "%s" % a and len(a) == 16
    assert a != fingerprint("stack_exceedance", {"outlet": "o1", "pollutant": "nox"})
    assert a != fingerprint("other", {"outlet": "o1", "pollutant": "so2"})


def test_first_exceeded_hour_fires_with_for_one():
    ep = replay(hours(OK, EXC), for_n=1)
    assert (ep.state, ep.fired_at, ep.active_since, ep.value) == ("firing", T0 + timedelta(hours=1), T0 + timedelta(hours=1), 80.0)


def test_for_two_hours_is_pending_after_one_and_fires_after_two():
    assert replay(hours(EXC), for_n=2).state == "pending"
    ep = replay(hours(EXC, EXC), for_n=2)
    assert (ep.state, ep.active_since, ep.fired_at) == ("firing", T0, T0 + timedelta(hours=1))


def test_a_pending_series_that_complies_goes_back_to_inactive():
    assert replay(hours(EXC, OK, EXC), for_n=2).state == "pending"
    assert replay(hours(EXC, OK), for_n=2).state == "inactive"


def test_resolves_after_the_configured_number_of_compliant_hours():
    assert replay(hours(EXC, OK), resolve_after=2).state == "firing"
    ep = replay(hours(EXC, OK, OK), resolve_after=2)
    assert (ep.state, ep.resolved_at) == ("resolved", T0 + timedelta(hours=2))


def test_hours_not_judged_neither_fire_nor_resolve_nor_break_a_run():
    assert replay(hours(NJ, NJ)).state == "inactive"
    assert replay(hours(EXC, NJ, NJ)).state == "firing"
    assert replay(hours(EXC, NJ, EXC), for_n=2).state == "firing"  # the stopped hour does not break the run
    assert replay(hours(EXC, OK, NJ, OK), resolve_after=2).state == "resolved"


def test_a_new_exceedance_after_resolution_starts_a_new_episode():
    ep = replay(hours(EXC, OK, EXC))
    assert (ep.state, ep.active_since) == ("firing", T0 + timedelta(hours=2))


def test_firing_notifies_once_and_the_same_hour_again_changes_nothing():
    h = hours(OK, EXC)
    state, notify = advance(blank(), replay(h), T0)
    assert (state.state, notify, state.last_sent_at) == ("firing", "firing", None)
    sent = AlertState(**{**state.__dict__, "last_sent_at": T0})
    # redelivery: the same verdicts again
    again, notify2 = advance(sent, replay(dict(h)), T0 + timedelta(minutes=5))
    assert notify2 is None and again.state == "firing" and again.last_sent_at == T0
    assert again.fired_at == state.fired_at


def test_restart_without_renotify_the_stored_state_and_verdicts_derive_the_same():
    h = hours(EXC, EXC, EXC)
    stored, _ = advance(blank(), replay(h), T0)
    stored = AlertState(**{**stored.__dict__, "last_sent_at": T0})
    # a new process reads the row and the hours back and sees nothing new
    state, notify = advance(stored, replay(h), T0 + timedelta(hours=5))
    assert notify is None and state.state == "firing" and state.last_sent_at == T0


def test_resolution_notifies_once():
    fired, _ = advance(blank(), replay(hours(EXC)), T0)
    state, notify = advance(fired, replay(hours(EXC, OK)), T0)
    assert (state.state, notify, state.resolved_at) == ("resolved", "resolved", T0 + timedelta(hours=1))
    state2, notify2 = advance(state, replay(hours(EXC, OK, OK)), T0)
    assert notify2 is None and state2.state == "resolved"


def test_a_recomputed_hour_that_turns_compliant_resolves_the_alert_it_fired():
    fired, _ = advance(blank(), replay(hours(EXC)), T0)
    later = T0 + timedelta(hours=3)
    state, notify = advance(fired, replay(hours(OK)), later)
    assert (state.state, notify, state.resolved_at, state.fired_at) == ("resolved", "resolved", later, T0)
    before, after = hours(EXC), hours(OK)
    assert changed_verdicts(before, after) == {T0: ("exceeded", "compliant")}
    assert changed_verdicts(after, after) == {}


def test_a_recomputed_hour_does_not_move_the_notified_start_of_a_firing_alert():
    fired, _ = advance(blank(), replay(hours(EXC, EXC)), T0)
    # the first hour recomputed as compliant: still firing on the second, start unchanged
    state, notify = advance(fired, replay(hours(OK, EXC)), T0)
    assert notify is None and state.state == "firing" and state.fired_at == T0


def test_fired_and_resolved_between_two_looks_is_notified_as_a_resolution():
    state, notify = advance(blank(), replay(hours(EXC, OK)), T0)
    assert (notify, state.state, state.fired_at, state.resolved_at) == ("resolved", "resolved", T0, T0 + timedelta(hours=1))
