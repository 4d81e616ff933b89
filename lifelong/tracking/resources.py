"""What a run ran on: peak memory (resettable per run on Linux, so runs sharing a worker are measured apart),
and the versions and git commit stored with every run."""

from __future__ import annotations

import platform
import resource
import subprocess
from pathlib import Path
from typing import Any

import torch

from lifelong import __version__


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: write 5 to /proc/self/clear_refs). False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory (MiB) since the last reset, or since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if platform.system() != "Darwin" else kb / 2**20


def git_commit() -> str | None:
    """The commit of the lifelong checkout in use, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Versions, platform and git commit, stored with every run for reproducibility."""
    return {"lifelong": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "git_commit": git_commit()}
