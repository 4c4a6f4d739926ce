"""The exit status of every ``r1omni-fast`` command, defined once (docs/troubleshooting.md "Exit status of every command").

The CLI (``r1omni_fast.cli``) maps errors onto these, and the trainers' signal handling
(``r1omni_fast.train.faults``) reports the two interrupt statuses; both import them from here.
"""

#: The work finished.
EXIT_OK = 0
#: A runtime failure: the work started and could not finish (no clip could be predicted, a run
#: that cannot go on, a full disk or read-only output folder).
EXIT_FAILED = 1
#: A usage, config or data error, found before any work: bad flags or config values, a bad or
#: empty data file, a missing or incomplete model folder, a device that is not there.
EXIT_USAGE = 2
#: Stopped by SIGTERM / SIGUSR1 after saving a checkpoint (sysexits' EX_TEMPFAIL: a temporary
#: failure, run again with ``--resume``).
EXIT_PREEMPTED = 75
#: Stopped by SIGINT / Ctrl-C (128 + SIGINT, the shell's convention), checkpoint written or not.
EXIT_INTERRUPTED = 130
#: Stopped by SIGTERM where there is nothing to save (every command but a training run past its
#: start, which saves and exits :data:`EXIT_PREEMPTED`): 128 + SIGTERM, with one line, after the
#: same clean-up as Ctrl-C (no partial output file is left in place of a complete one).
EXIT_TERMINATED = 143

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PREEMPTED", "EXIT_TERMINATED", "EXIT_USAGE"]
