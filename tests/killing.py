"""Kill a batch process once its manifest records enough finished passes (for the resume tests)."""
import signal
import subprocess
import time
from pathlib import Path


def kill_after_done_passes(command, cwd, env, out: Path, passes: int, timeout: float) -> dict:
    """Start `command`, SIGKILL it once OUT's manifest has `passes` "done" lines; the PNGs it left, name → (inode,
    mtime), so a test can check the re-run leaves them alone."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "tlok-manifest.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if manifest.is_file() and manifest.read_text().count('"event": "done"') >= passes:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the batch finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
