"""Mode schedules: which train-step mode runs at each step.

A schedule is a pure function of the step (and seed), so a resumed run picks the same modes as an
uninterrupted one without saving anything beyond the step.

  alternate  single, two, single, two, ...   (SemVLP's iterative pre-training; default)
  random     two with probability p_two_stream, else single; seeded per step
  single     always single-stream
  two        always two-stream
  both       one step runs both modes on the same batch and sums their losses
  fuse       always the fuse mode (SIMLA: one text stack cross-attending to a vision tower)
  staged     always the staged mode (MVPTR: uni-modal layers, then joint layers)
  every:N    N steps single, then N steps two, and so on
"""

from __future__ import annotations

import dataclasses

import numpy as np

SCHEDULES = ('alternate', 'random', 'single', 'two', 'both', 'fuse', 'staged', 'every:N')
# Schedules of one step mode throughout ('fuse', SIMLA's, and 'staged', MVPTR's: see
# models/encoder.py).
CONSTANT = ('single', 'two', 'both', 'fuse', 'staged')


@dataclasses.dataclass(frozen=True)
class Schedule:
    kind: str
    period: int = 1
    p_two_stream: float = 0.5
    seed: int = 0

    def mode(self, step: int) -> str:
        if self.kind in CONSTANT:
            return self.kind
        if self.kind == 'alternate':
            return ('single', 'two')[step % 2]
        if self.kind == 'every':
            return ('single', 'two')[(step // self.period) % 2]
        if self.kind == 'random':
            draw = np.random.default_rng((self.seed, step)).random()
            return 'two' if draw < self.p_two_stream else 'single'
        raise AssertionError(self.kind)

    @property
    def modes(self) -> tuple[str, ...]:
        """The train-step modes this schedule can produce (one compiled program each)."""
        if self.kind in CONSTANT:
            return (self.kind,)
        if self.kind == 'random' and self.p_two_stream in (0.0, 1.0):
            return ('two',) if self.p_two_stream == 1.0 else ('single',)
        return ('single', 'two')


def parse(spec: str, *, p_two_stream: float = 0.5, seed: int = 0) -> Schedule:
    """Parses `config.schedule`; raises ValueError naming the key for anything unknown."""
    if spec in ('alternate', 'random', *CONSTANT):
        if spec == 'random' and not 0.0 <= p_two_stream <= 1.0:
            raise ValueError(f'config.p_two_stream={p_two_stream} must be in [0, 1]')
        return Schedule(spec, p_two_stream=p_two_stream, seed=seed)
    if spec.startswith('every:'):
        period = spec.removeprefix('every:')
        if not period.isdigit() or int(period) < 1:
            raise ValueError(f"config.schedule={spec!r}: 'every:N' needs a positive integer N")
        return Schedule('every', period=int(period))
    raise ValueError(
        f'config.schedule={spec!r} is not a known schedule; expected one of {SCHEDULES}'
    )
