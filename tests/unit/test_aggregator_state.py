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


def test_an_ambient_hour_dirties_the_next_eleven_hours_and_its_day():
    outs = affected(InputKey("ambient", "s", DAY0 + 5 * HOUR))
    assert OutputKey("ambient", "s", "hour", DAY0 + 16 * HOUR) in outs
    assert OutputKey("ambient", "s", "hour", DAY0 + 17 * HOUR) not in outs
    assert OutputKey("ambient", "s", "day", DAY0) in outs
    assert all(InputKey("ambient", "s", DAY0 + 5 * HOUR) in inputs_of(o) for o in outs)


def test_journal_survives_a_restart_and_a_torn_last_line(tmp_path):
    state = AggregatorState(tmp_path)
    key = InputKey("ambient", "s", DAY0 + HOUR)
    state.mark({key: {60, 120}}, affected(key))
    state.set_watermark(123.0)
    state.close()
    with open(tmp_path / "state.jsonl", "a") as f:
        f.write('{"dirty": [["amb')  # a crash in the middle of a line
    again = AggregatorState(tmp_path)
    assert again.seen[key] == {60, 120} and len(again.dirty) == 13 and again.watermark == 123.0


def test_a_reading_arriving_during_a_computation_keeps_its_output_dirty(tmp_path):
    state = AggregatorState(tmp_path)
    key = InputKey("stack", "o", DAY0 + HOUR)
    out = OutputKey("stack", "o", "hour", DAY0 + HOUR)
    state.mark({key: {60}}, [out])
    taken = state.snapshot_due(1e12, lambda k: 0)
    state.mark({key: {120}}, [out])  # arrives while `taken` is being computed
    state.done(taken, {key: {60}})
    assert out in state.dirty and state.seen[key] == {120}
    state.done(state.snapshot_due(1e12, lambda k: 0), {key: {120}})
    assert not state.dirty and not state.seen
