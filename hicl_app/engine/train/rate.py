"""Training speed as a user reads it: samples per second and the time left, over recent steps.

A since-start average (samples seen / time since the loop began) counts everything that is not
training at the pace a user can expect: the first steps of a fresh process (kernels warming up,
a resumed stage's vision features computed again), checkpoint writes, a slow stop poll. Here only
the steps themselves are timed, over the last `window` of them, so the rate after a resume (or a
checkpoint) is the rate of the steps being run now.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


class StepRate:
    def __init__(self, window: int = 20, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.steps: deque[tuple[float, int]] = deque(maxlen=window)
        self._started: float | None = None

    def start_step(self) -> None:
        self._started = self.clock()

    def end_step(self, samples: int) -> None:
        if self._started is not None:
            self.steps.append((max(self.clock() - self._started, 1e-9), samples))
            self._started = None

    def samples_per_s(self) -> float | None:
        if not self.steps:
            return None
        return sum(n for _, n in self.steps) / sum(t for t, _ in self.steps)

    def eta_s(self, steps_left: int) -> float | None:
        if not self.steps:
            return None
        return steps_left * sum(t for t, _ in self.steps) / len(self.steps)
