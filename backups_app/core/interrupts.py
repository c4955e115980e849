"""Signals for the commands that run long work in the foreground (backup, restore, replicate...)."""

import signal
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def on_stop_signals(handler=_interrupt, signals=STOP_SIGNALS, *, restore=True):
    """Call `handler` on SIGINT and SIGTERM (default: raise KeyboardInterrupt) inside the block.

    Yields the list of signals received, newest last. A signal that was ignored when we
    started (a background job of a script) stays ignored, as Python itself does for SIGINT.
    The previous handlers come back when the block ends; with `restore=False` (a command run
    from the command line, whose process ends with it) `handler` stays until the exit.
    """
    received = []

    def record_and_handle(signum, frame):
        received.append(signum)
        handler(signum, frame)

    previous = {}
    for signum in signals:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, record_and_handle)
    try:
        yield received
    finally:
        if restore:
            for signum, old in previous.items():
                signal.signal(signum, old)


def ignore_stop_signals(signals=STOP_SIGNALS):
    """Ignore SIGINT and SIGTERM from now on (main thread only), down to the process's exit."""
    for signum in signals:
        signal.signal(signum, signal.SIG_IGN)


def signal_name(received, default=signal.SIGINT):
    """The name of the last signal received ("SIGTERM"), and its number."""
    signum = received[-1] if received else default
    return signal.Signals(signum).name, signum
