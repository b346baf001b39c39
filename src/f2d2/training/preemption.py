"""Save a checkpoint when a job is asked to stop, at the next step boundary, then let the stop happen.

On SLURM, submitit asks for SIGUSR2 ahead of the time limit (``--signal``) and its own handler for it
checkpoints the job's callable, requeues the job and exits; ``scancel``, ``scontrol requeue`` and
preemption send SIGTERM, which submitit only logs before SLURM's SIGKILL. A handler that saved the
training state right away could catch the loop mid-step (parameters updated, scheduler not). So
:class:`StopSignals` only records the signal (``pending``); after the step in which one arrived, the
loop saves and calls :meth:`StopSignals.deliver`, which hands the signal to whatever handled it
before (submitit's handler requeues and exits; the default action terminates; an ignored signal is
ignored). Under several processes the ranks agree on the step first (:mod:`f2d2.training.distributed`).
The requeued job starts the same command again and training resumes from the checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

# submitit's preemption signal (SIGUSR2 unless $SUBMITIT_PREEMPT_SIGNAL names another) and SIGTERM.
STOP_SIGNALS = (signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")], signal.SIGTERM)


class StopSignals:
    """Context manager: while active, ``signals`` are recorded in ``pending`` until :meth:`deliver`.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum: int, frame: Any) -> None:
        if signum not in self.pending:
            self.pending.append(signum)

    def deliver(self) -> None:
        """Restore the previous handlers and deliver the pending signals to them."""
        pending, self.pending = self.pending, []
        previous = dict(self._previous)
        self.__exit__()
        for sig in pending:
            handler = previous.get(sig, signal.SIG_DFL)
            if callable(handler):
                handler(sig, None)  # submitit's: checkpoint the callable, requeue, sys.exit
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), sig)  # the default action, now that the default is restored
