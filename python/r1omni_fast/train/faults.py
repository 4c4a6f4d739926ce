"""What a training run does when something goes wrong around the step: errors that end a run
with one line, the non-finite guard, and pre-emption signals.

- :class:`TrainingError`: a run that cannot go on (non-finite steps beyond the budget, data that
  cannot feed a step, a checkpoint that cannot be written); the CLI prints its one-line message
  and exits with status 1.
- :class:`NonFiniteGuard`: a step whose loss or gradient norm is NaN or infinite is skipped (no
  optimizer update and no scheduler step, as transformers' Trainer does when the AMP scaler skips
  one; its data are consumed and the step is counted), logged with a warning;
  ``max_nonfinite_steps`` such steps in a row end the run. With several ranks the decision is
  all-reduced, so every rank skips the same steps.
- :class:`StopSignals`: SIGTERM, SIGUSR1 (what clusters send before they take a node) and SIGINT
  ask the loop to stop after the current step; the loop writes a checkpoint and raises
  :class:`Preempted`, which the CLI turns into exit status :data:`EXIT_PREEMPTED` (75,
  ``EX_TEMPFAIL``: run again with ``--resume``) or 130 after SIGINT. A second SIGINT stops at once.
  The final export runs under the same handlers: a signal during it lets it finish (the model is
  complete), then the run exits 75 / 130 (``Preempted(..., finished=True)``).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from typing import Any, Dict, Optional, Sequence

import torch

from r1omni_fast.exit_status import EXIT_INTERRUPTED, EXIT_PREEMPTED

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run that cannot continue; the message is one line (or a short list) saying why and what
    was kept."""


class NonFiniteError(TrainingError):
    """Non-finite losses, gradients or weights beyond what the run tolerates."""


class Preempted(Exception):
    """The run stopped on a signal after step ``step``; ``checkpoint`` is the folder written (None
    when nothing could be saved)."""

    def __init__(self, signum: int, step: int, checkpoint: Any, *, finished: bool = False) -> None:
        self.signum, self.step, self.checkpoint, self.finished = signum, step, checkpoint, finished
        name = signal.Signals(signum).name
        kept = (f"wrote {checkpoint}; continue with --resume" if checkpoint is not None
                else "no step was completed, nothing to save")
        if finished:  # the signal came during the final export: it was completed first
            kept = (f"the run had finished; the final model was written completely before stopping "
                    f"(checkpoint {checkpoint}); the final evaluation was skipped")
        super().__init__(f"{name}: stopped after step {step}; {kept}")

    @property
    def exit_status(self) -> int:
        return EXIT_INTERRUPTED if self.signum == signal.SIGINT else EXIT_PREEMPTED


def all_finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(float(v)) for v in values)


class NonFiniteGuard:
    """Decides whether an optimizer step may be applied.

    ``check(values, dist)`` returns True (skip the step) when any of ``values`` (the step's loss
    and gradient norm) is not finite on any rank. ``total`` counts the skipped steps of the run
    (kept in checkpoints), ``consecutive`` the current streak; a streak of ``limit`` raises
    :class:`NonFiniteError`.
    """

    def __init__(self, limit: int, total: int = 0) -> None:
        self.limit = limit
        self.total = total
        self.consecutive = 0

    def check(self, step: int, values: Dict[str, float], dist: Any = None) -> bool:
        bad = 0.0 if all_finite(values.values()) else 1.0
        if dist is not None and dist.enabled:
            bad = dist.sum([bad])[0]
        if not bad:
            self.consecutive = 0
            return False
        self.total += 1
        self.consecutive += 1
        shown = ", ".join(f"{k} {float(v):g}" for k, v in values.items())
        if self.consecutive >= self.limit:
            raise NonFiniteError(
                f"step {step}: {self.consecutive} steps in a row had a non-finite loss or gradient norm ({shown}); "
                f"stopped (max_nonfinite_steps {self.limit}); the weights were never updated from them and the "
                "newest checkpoint is safe to resume from: lower learning_rate, check the rewards and the data")
        log.warning("step %d: non-finite %s; optimizer step skipped (%d in a row, %d in the run; the run stops at "
                    "%d in a row)", step, shown, self.consecutive, self.total, self.limit)
        return True


def check_finite_weights(params: Sequence[torch.nn.Parameter], dist: Any = None) -> None:
    """Raise :class:`NonFiniteError` when a parameter holds NaN or inf (on any rank): a checkpoint
    is never written from such weights."""
    bad = 0.0
    for p in params:
        local = p.to_local() if hasattr(p, "to_local") else p  # a DTensor shard
        if not bool(torch.isfinite(local.detach()).all()):
            bad = 1.0
            break
    if dist is not None and dist.enabled:
        bad = dist.sum([bad])[0]
    if bad:
        raise NonFiniteError("the weights hold NaN or inf: no checkpoint was written from them; resume from "
                             "the newest checkpoint with a lower learning_rate")


class StopSignals:
    """Context manager catching SIGTERM, SIGUSR1 and SIGINT while the training loop runs.

    The first signal sets :attr:`received`; the loop checks :meth:`requested` between steps. A
    second SIGINT raises KeyboardInterrupt at once. The previous handlers come back on exit.
    Outside the main thread (signals cannot be caught there) it does nothing.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum
            log.warning("%s received: finishing the current step, then writing a checkpoint%s",
                        signal.Signals(signum).name,
                        " (press Ctrl-C again to stop at once, without saving)" if signum == signal.SIGINT else "")

    def requested(self, dist: Any = None) -> Optional[int]:
        """The signal to stop for (any rank's; every rank gets the same answer), or None."""
        if dist is None or not dist.enabled:
            return self.received
        interrupt, other = dist.sum([self.received == signal.SIGINT,
                                     self.received is not None and self.received != signal.SIGINT])
        if other:
            return self.received if self.received not in (None, signal.SIGINT) else signal.SIGTERM
        return signal.SIGINT if interrupt else None
