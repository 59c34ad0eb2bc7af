"""Typed errors of the case store: each carries what a caller (CLI, web, engine) needs to
say what went wrong and what would be accepted instead."""

from __future__ import annotations


class CaseError(Exception):
    """Base of every case-store error."""


class CaseNotFound(CaseError):
    def __init__(self, case_id: int) -> None:
        super().__init__(f"no case {case_id}")
        self.case_id = case_id


class TransitionRefused(CaseError):
    """A transition the workflow does not allow from the case's state, or one missing what
    it requires. `allowed` names the states the case may go to next."""

    def __init__(self, case_id: int | None, from_state: str, to_state: str, allowed: list[str],
                 problem: str = "") -> None:
        self.case_id = case_id
        self.from_state = from_state
        self.to_state = to_state
        self.allowed = list(allowed)
        self.problem = problem or f"{from_state} -> {to_state} is not a transition of the workflow"
        nxt = ", ".join(self.allowed) if self.allowed else "none (the case is ended)"
        who = f"case {case_id}: " if case_id is not None else ""
        super().__init__(f"{who}{self.problem}; from {from_state} the case may go to: {nxt}")


class MarkError(CaseError):
    """A mark that cannot be added or removed (unknown type, end before start, no such mark)."""


class MarkNotFound(MarkError):
    def __init__(self, mark_id: int) -> None:
        super().__init__(f"no mark {mark_id}")
        self.mark_id = mark_id
