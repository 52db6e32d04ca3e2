import os
import subprocess
import tempfile

import pytest

# Torch's 2-thread mode is erratic on the CI machines; set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The hash and calibration caches of the tests' runs (and their subprocesses') stay out of the user's home.
os.environ.setdefault("TLOK_CACHE_DIR", tempfile.mkdtemp(prefix="tlok-test-cache-"))


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder we cannot write: chmod for a user; for root (who ignores modes), a read-only tmpfs."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("root, and cannot mount a read-only tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)
