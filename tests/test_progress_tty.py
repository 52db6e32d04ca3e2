"""`run` in a terminal: the progress bar shows while the passes run, also in a pseudo-terminal nobody gave a size."""
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_in_terminal(argv, cwd, size):
    """What a terminal of `size` (rows, columns; (0, 0) as a fresh pseudo-terminal is) shows of `argv`."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([sys.executable, "-m", "tlok_workflow", *argv], cwd=cwd, stdin=terminal,
                               stdout=terminal, stderr=terminal, close_fds=True,
                               env=dict(env, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TERM="xterm"))
    os.close(terminal)
    shown, deadline = b"", time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:   # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                shown += chunk
        assert process.wait(timeout=30) == 0, shown.decode(errors="replace")
    finally:
        process.kill()
        os.close(controller)
    return shown.decode("utf-8", errors="replace")


@pytest.mark.parametrize("size", [(0, 0), (24, 100)], ids=["unsized", "24x100"])
def test_the_bar_shows_while_the_passes_run(tmp_path, size):
    shown = run_in_terminal(["run", "--demo", "--seed", "7", "--out", "outputs"], tmp_path, size)
    end = shown.index("wrote 4 stage image(s)")
    during = shown[:end]
    for stage in ("s1/5 base item 1/1 step 1/20", "s2/5 style item 1/1 step 5/10", "s4/5 1536 item 1/1 step 10/10"):
        assert stage in during, shown
    assert "| 2/5 [" in during   # the count of passes done climbs pass by pass
    width = size[1] or 80
    lines = during.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    bar_lines = [line for line in lines if "%|" in line and "pass" in line]
    assert bar_lines and max(len(line) for line in bar_lines) < width
