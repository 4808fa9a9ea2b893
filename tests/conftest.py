import os

# Sleep-waiting OpenMP threads (see app/cli.py): set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]

# A suite started in the background (`cmd &`, nohup) inherits SIGINT *ignored*, and so would every
# process a test starts: the Ctrl-C tests would then wait forever. Handle it as a terminal does
# (children get the default again at exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def splat_transform_path() -> str | None:
    """PlayCanvas's `splat-transform` (npm), the independent implementation the format tests
    check against: $SCENELAB_SPLAT_TRANSFORM, the README's local install (.tools/), or PATH."""
    env = os.environ.get("SCENELAB_SPLAT_TRANSFORM")
    if env:
        return env
    local = _REPO / ".tools" / "node_modules" / ".bin" / "splat-transform"
    if local.exists():
        return str(local)
    return shutil.which("splat-transform")


@pytest.fixture(scope="session")
def splat_transform() -> Callable[..., subprocess.CompletedProcess]:
    """`run(*args)` runs `splat-transform -q -w -g cpu *args` (skips when it is not installed)
    and raises with its output when it fails."""
    exe = splat_transform_path()
    if exe is None:
        pytest.skip("splat-transform is not installed (npm install --prefix .tools ...)")

    def run(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [exe, "-q", "-w", "-g", "cpu", *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    return run
