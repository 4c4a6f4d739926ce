"""CPU threading of an r1omni-fast process, set before torch is imported.

torch's CPU kernels run on OpenMP threads (libgomp). When a parallel region ends, libgomp's
threads busy-wait ("spin") for the next one before they sleep. Alone on a machine that saves a
wake-up; beside another busy process it burns the cores the other process needs, and a thread
that is descheduled holds up its team at every barrier. Measured on a 2-core machine under load,
10 SFT steps of the demo recipe took 27-37 s of CPU time with libgomp's default and 10-11 s with
``OMP_WAIT_POLICY=PASSIVE``, for the same work; two trainings side by side took 1.33x their time
alone with passive waiting and 1.88x with spinning, and alone the two differ by a median of 2 %
over 24 paired rounds (``bench/contention.py`` prints these). So the command line asks for
passive waiting unless the user chose a policy.

The usual variables win: ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` (either one set means the user
chose), ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` for the number of threads.
"""

from __future__ import annotations

import os
from typing import MutableMapping, Optional


def configure_cpu_threads(environ: Optional[MutableMapping[str, str]] = None) -> bool:
    """Ask OpenMP threads to sleep, not spin, while they wait: sets ``OMP_WAIT_POLICY=PASSIVE``
    in ``environ`` (default ``os.environ``) unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is
    already set. libgomp reads the variable when it is loaded, so this takes effect in this
    process only if torch has not been imported yet, and in every child process it starts.
    Returns True when the variable was set here."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True

