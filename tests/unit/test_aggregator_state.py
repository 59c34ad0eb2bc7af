"""The aggregator journal and its dependency keys."""

from __future__ import annotations

from aggregator.keys import HOUR, InputKey, OutputKey, affected, day_of_hour, hour_of_ns, inputs_of
from aggregator.state import AggregatorState

DAY0 = 1795190400  # a China midnight: 2026-11-21 00:00 +08:00


def test_a_reading_ending_on_the_hour_belongs_to_the_hour_it_ends():
    assert hour_of_ns((DAY0 + HOUR) * 10**9) == DAY0 + HOUR
    assert hour_of_ns((DAY0 + HOUR) * 10**9 + 1) == DAY0 + 2 * HOUR
    assert day_of_hour(DAY0 + 24 * HOUR) == DAY0  # the hour ending at midnight closes the day
    assert day_of_hour(DAY0 + 25 * HOUR) == DAY0 + 24 * HOUR


def test_an_ambient_hour_dirties_the_next_23_hours_for_the_so2_24_hour_rule_and_its_day():
    outs = affected(InputKey("ambient", "s", DAY0 + 5 * HOUR))
    assert OutputKey("ambient", "s", "hour", DAY0 + 28 * HOUR) in outs  # its SO2 is in that hour's 24-h mean
    assert OutputKey("ambient", "s", "hour", DAY0 + 29 * HOUR) not in outs
    assert OutputKey("ambient", "s", "day", DAY0) in outs
    assert len(inputs_of(OutputKey("ambient", "s", "hour", DAY0 + 28 * HOUR))) == 24
    assert all(InputKey("ambient", "s", DAY0 + 5 * HOUR) in inputs_of(o) for o in outs)


def test_journal_survives_a_restart_and_a_torn_last_line(tmp_path):
    state = AggregatorState(tmp_path)
    key = InputKey("ambient", "s", DAY0 + HOUR)
    state.mark({key: {60: 1, 120: 3}}, affected(key))
    state.set_watermark(123.0)
    state.close()
    with open(tmp_path / "state.jsonl", "a") as f:
        f.write('{"dirty": [["amb')  # a crash in the middle of a line
    again = AggregatorState(tmp_path)
    assert again.seen[key] == {60: 1, 120: 3} and len(again.dirty) == 25 and again.watermark == 123.0


def test_a_reading_arriving_during_a_computation_keeps_its_output_dirty(tmp_path):
    state = AggregatorState(tmp_path)
    key = InputKey("stack", "o", DAY0 + HOUR)
    out = OutputKey("stack", "o", "hour", DAY0 + HOUR)
    state.mark({key: {60: 1}}, [out])
    taken = state.snapshot_due(1e12, lambda k: 0)
    state.mark({key: {120: 1}}, [out])  # arrives while `taken` is being computed
    state.verified({key: {60: 1}})
    state.done(taken, {}, 0.0)
    assert out in state.dirty and state.seen[key] == {120: 1}
    state.verified({key: {120: 1}})
    state.done(state.snapshot_due(1e12, lambda k: 0), {}, 0.0)
    assert not state.dirty and not state.seen


def test_a_field_found_is_no_longer_waited_for_but_the_other_fields_of_that_time_are(tmp_path):
    state = AggregatorState(tmp_path)
    key = InputKey("ambient", "s", DAY0 + HOUR)
    state.mark({key: {60: 0b101}}, [])
    state.verified({key: {60: 0b001}})
    assert state.seen[key] == {60: 0b100}
    state.close()
    assert AggregatorState(tmp_path).seen[key] == {60: 0b100}  # and so after a restart


def test_a_journal_of_bare_reading_times_still_loads(tmp_path):
    (tmp_path / "state.jsonl").write_text('{"seen": [["ambient", "s", %d, [60, 120]]]}\n' % (DAY0 + HOUR))
    state = AggregatorState(tmp_path)
    key = InputKey("ambient", "s", DAY0 + HOUR)
    assert state.seen[key] == {60: 0, 120: 0}
    state.verified({key: {60: 0}})
    assert state.seen[key] == {120: 0}


def test_an_incomplete_rollup_is_rechecked_until_complete_and_survives_a_restart(tmp_path):
    state = AggregatorState(tmp_path)
    out = OutputKey("stack", "o", "hour", DAY0 + HOUR)
    state.mark({}, [out])
    state.done(state.snapshot_due(1e12, lambda k: 0), {out: 3}, recheck_at=100.0)
    assert not state.dirty and state.incomplete == {out: 3}
    assert state.snapshot_recheck(99.0) == {} and state.snapshot_recheck(100.0) == {out: 3}
    state.close()
    again = AggregatorState(tmp_path)
    assert again.snapshot_recheck(0.0) == {out: 3}  # looked at again right after a restart
    again.done({out: -1}, {}, 0.0)  # recomputed with everything present
    assert again.incomplete == {} and again.snapshot_recheck(1e12) == {}


def test_past_the_lateness_readings_are_no_longer_waited_for_nor_rollups_rechecked(tmp_path):
    state = AggregatorState(tmp_path)
    old, new = InputKey("ambient", "s", DAY0 + HOUR), InputKey("ambient", "s", DAY0 + 5 * HOUR)
    out = OutputKey("ambient", "s", "hour", DAY0 + HOUR)
    later = OutputKey("ambient", "s", "hour", DAY0 + 3 * HOUR)
    state.mark({old: {60: 1}, new: {60: 1}}, [])
    state.done({}, {out: 1, later: 1}, 0.0)
    last_use = {old: DAY0 + 3 * HOUR, new: DAY0 + 5 * HOUR}  # when the last rollup using each closes
    left = state.expire(DAY0 + 2 * HOUR, lambda k: k.time, last_use.__getitem__)
    # `later` is still re-checked, so the readings it waits for are not forgotten yet
    assert left == [out] and old in state.seen and state.incomplete == {later: 1}
    assert state.expire(DAY0 + 4 * HOUR, lambda k: k.time, last_use.__getitem__) == [later]
    assert old not in state.seen and new in state.seen and not state.incomplete
