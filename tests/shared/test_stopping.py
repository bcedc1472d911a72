"""A stop that hangs ends at the deadline, saying what it was waiting on; one that finishes in
time is not cut short. Real processes and real signals: the deadline exists for what an
in-process test cannot show (a loop stuck in its stop)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from shared.stopping import EXIT_CODE

PROGRAM = textwrap.dedent(
    """
    import asyncio, signal, sys
    from shared.logging import configure_logging
    from shared.stopping import StopDeadline

    configure_logging("probe", log_format="json", level="INFO")
    deadline = StopDeadline("probe", grace=float(sys.argv[1]))
    stop_takes = float(sys.argv[2])

    async def leave_the_group():
        await asyncio.sleep(stop_takes)  # a stop step the broker never answers, or answers late

    async def main():
        stopping = asyncio.Event()
        def on_signal():
            deadline.arm()
            stopping.set()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_signal)
        print("running", flush=True)
        await stopping.wait()
        await asyncio.create_task(leave_the_group(), name="probe leave the group")
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


def _run_and_stop(grace: float, stop_takes: float) -> tuple[int, float, str, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, str(grace), str(stop_takes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"running"
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return process.returncode, time.monotonic() - sent, out.decode(), err.decode()


def test_a_stop_that_hangs_ends_within_the_grace_naming_what_it_waited_on() -> None:
    code, took, out, err = _run_and_stop(grace=1.0, stop_takes=3600)
    assert code == EXIT_CODE
    assert took < 1.0, took
    assert "stopped" not in out
    assert "stop overran its deadline" in err
    assert "probe leave the group" in err  # the task it was waiting on, by name
    assert "leave_the_group" in err  # and where


def test_a_stop_that_finishes_in_time_is_not_cut_short() -> None:
    code, took, out, err = _run_and_stop(grace=5.0, stop_takes=0.5)
    assert code == 0, err
    assert "stopped" in out
    assert "stop overran" not in err
    assert took < 5.0
