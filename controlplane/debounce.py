"""When to rebuild after a burst of changes (pure: time is passed in).

A rebuild waits for a quiet period after the last change, but never longer
than a ceiling after the first change of the burst, so a steady trickle of
edits cannot starve the proxies (istiod: 100 ms quiet, 10 s ceiling; ours is
shorter because a rebuild here is cheap).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Debounce:
    quiet_s: float = 0.1
    ceiling_s: float = 1.0
    first_change: float | None = None
    last_change: float | None = None

    def changed(self, now: float) -> Debounce:
        first = self.first_change if self.first_change is not None else now
        return Debounce(self.quiet_s, self.ceiling_s, first, now)

    def deadline(self) -> float | None:
        """When the pending burst should be flushed; None when nothing is pending."""
        if self.first_change is None or self.last_change is None:
            return None
        return min(self.last_change + self.quiet_s, self.first_change + self.ceiling_s)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def flushed(self) -> Debounce:
        return Debounce(self.quiet_s, self.ceiling_s)
