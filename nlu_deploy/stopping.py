"""SIGTERM and Ctrl-C as ordinary events: the command unwinds, its cleanups run, it exits non-zero.

Python's default for SIGTERM is to die at once: no `finally`, no context manager's exit, so a
stage left its staging folder and serve-bench left tritonserver and its Python stubs running.
While a command runs, both signals raise `Stopped` instead, wherever the main thread is. It is a
KeyboardInterrupt, so the `except NluDeployError` / `except Exception` blocks that let a search
skip a failed candidate do not swallow it, and asyncio lets it out of its event loop at once (it
keeps other BaseExceptions raised in a task on that task, where a stop could go unseen); the code that has something
to keep (serve-bench's measured levels, bench's measurements) catches it, keeps that, and
raises it again. Training installs its own handler on top (checkpointing.StopOnSignal: save
the state, then stop).

A second signal while the first unwinds is noted and ignored: raising again would cut the
cleanup short (a server half stopped). Inside an asyncio event loop a raised exception can land
in any task (asyncio keeps it there and logs it at shutdown), so there `run_stoppable` cancels the
main task instead, as asyncio does for Ctrl-C, and raises Stopped once the loop is out. SIGKILL cannot be caught; what a command starts dies with
it another way (local_server: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived. `kept` says what the command kept (set by the code that kept it)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.kept: str | None = None

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(signal.Signals[self.signal_name])

    def sentence(self, command: str) -> str:
        kept = self.kept or "nothing half-written was kept"
        return f"nlu-deploy {command} was stopped by {self.signal_name}; {kept}."


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise Stopped in the main thread (once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[str] = []

    def handle(signum, frame) -> None:
        name = signal.Signals(signum).name
        if stopping:
            print(f"note: {name} received while stopping on {stopping[0]}; still cleaning up.", file=sys.stderr)
            return
        stopping.append(name)
        raise Stopped(name)

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def dies_with_this_process():
    """A Popen preexec_fn: the child gets SIGTERM when this process dies, even by SIGKILL, when no
    cleanup of ours can run (Linux's PR_SET_PDEATHSIG; elsewhere nothing). Only for children
    started from the main thread: the kernel ties it to the thread that forked."""
    return functools.partial(_die_with_parent, os.getpid())


def _die_with_parent(parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def run_stoppable(coroutine):
    """asyncio.run(coroutine), where SIGINT and SIGTERM cancel the coroutine's task (its finally
    blocks run, its child tasks are cancelled) and then raise Stopped."""
    import asyncio

    stop: list[str] = []
    try:
        return asyncio.run(_cancelled_on_stop(coroutine, stop))
    except asyncio.CancelledError:
        if stop:
            raise Stopped(stop[0]) from None
        raise


async def _cancelled_on_stop(coroutine, stop: list[str]):
    import asyncio

    if threading.current_thread() is not threading.main_thread():
        return await coroutine
    task, loop = asyncio.current_task(), asyncio.get_running_loop()

    def handle(signum, frame) -> None:
        if not stop:
            stop.append(signal.Signals(signum).name)
            loop.call_soon_threadsafe(task.cancel)

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        return await coroutine
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
