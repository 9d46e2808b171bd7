"""What one flush writes atomically: outcomes, dead letters, schedule changes, then acks.

A consumer's results are buffered in a :class:`Commit` and written by the commit script
(``scripts/commit.lua``) in one call, so an entry is never acknowledged without its outcome,
nor the reverse. :meth:`Commit.script_args` lays it out as the script reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .outcomes import DeadLetter, OutcomeRecord
from .schedule import Scheduled


@dataclass(slots=True)
class Commit:
    """What one flush writes atomically: outcomes, dead letters, schedule changes, then acks."""

    outcomes: list[OutcomeRecord]
    dead_letters: list[DeadLetter]
    schedule: list[tuple[Scheduled, int]]  # (delivery, due_ms)
    unschedule: list[str]  # leased members now settled
    acks: list[str]

    @classmethod
    def empty(cls) -> Commit:
        return cls([], [], [], [], [])

    def drain(self) -> Commit:
        """Move everything out into a new Commit, leaving this one empty (and the same object)."""
        taken = Commit(self.outcomes, self.dead_letters, self.schedule, self.unschedule, self.acks)
        self.outcomes, self.dead_letters, self.schedule = [], [], []
        self.unschedule, self.acks = [], []
        return taken

    def extend(self, other: Commit) -> None:
        self.outcomes += other.outcomes
        self.dead_letters += other.dead_letters
        self.schedule += other.schedule
        self.unschedule += other.unschedule
        self.acks += other.acks

    def __bool__(self) -> bool:
        return bool(
            self.outcomes or self.dead_letters or self.schedule or self.unschedule or self.acks
        )

    def script_args(self, group: str, maxlen: int) -> list[Any]:
        """The commit script's ARGV: group, maxlen, then five counted sections."""
        args: list[Any] = [group, maxlen]
        args.append(len(self.outcomes))
        args += self.outcomes
        args.append(len(self.dead_letters))
        for letter in self.dead_letters:
            fields = [item for pair in letter.to_fields().items() for item in pair]
            args.append(len(fields))
            args += fields
        args.append(len(self.unschedule))
        args.extend(self.unschedule)
        args.append(len(self.schedule))
        for item, due in self.schedule:
            args.append(due)
            args.append(item.dumps())
        args.append(len(self.acks))
        args.extend(self.acks)
        return args
