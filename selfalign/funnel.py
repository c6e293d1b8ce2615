"""The end-of-stage funnel: rows in, rows dropped per reason, rows out, time, tokens/s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Funnel:
    """Counts of one stage, summed over all parts, so a resumed run reports the whole stage."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)  # informative counts that are not drops
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0
    tokens: int = 0  # tokens the model processed (prompt + generated)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(self.dropped),
            "counters": dict(self.counters),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "tokens": self.tokens,
        }

    def add(self, other: Mapping[str, Any]) -> None:
        """Add a part's counts (as saved by `to_dict`) to this funnel."""
        self.rows_in += int(other.get("rows_in", 0))
        self.rows_out += int(other.get("rows_out", 0))
        for reason, n in other.get("dropped", {}).items():
            self.drop(reason, int(n))
        for name, n in other.get("counters", {}).items():
            self.count(name, int(n))
        for text in other.get("notes", []):
            self.note(text)
        self.seconds += float(other.get("seconds", 0.0))
        self.model_seconds += float(other.get("model_seconds", 0.0))
        self.tokens += int(other.get("tokens", 0))

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.model_seconds if self.model_seconds > 0 else 0.0

    def lines(self) -> list[tuple[str, str]]:
        rows = [("rows in", f"{self.rows_in:,}")]
        rows += [(f"  {name}", f"{n:,}") for name, n in self.counters.items()]
        rows += [(f"  dropped: {reason}", f"-{n:,}") for reason, n in self.dropped.items()]
        rows.append(("rows out", f"{self.rows_out:,}"))
        rows.append(("time", f"{self.seconds:,.1f} s"))
        if self.tokens:
            rows.append(("model tokens/s", f"{self.tokens_per_second:,.1f} ({self.tokens:,} tokens)"))
        return rows

    def render_text(self) -> str:
        lines = self.lines()
        width = max(len(k) for k, _ in lines)
        out = [f"== {self.stage}: funnel =="]
        out += [f"{k.ljust(width)}  {v.rjust(12)}" for k, v in lines]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def render_markdown(self) -> str:
        out = ["| step | rows |", "|---|---:|"]
        out += [f"| {k.strip()} | {v} |" for k, v in self.lines()]
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out)
