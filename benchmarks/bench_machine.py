"""What every benchmark records about the machine and a process: memory peak, load, CPU, code state.

Standard library only, so the children running in other venvs (LLaMA-Factory, TRL) import it too.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def memory_mb(field: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) resident memory of this process, in MB.

    Not ``ru_maxrss``: Linux carries the parent's peak across fork + exec into the child's.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def uptime() -> str:
    """``uptime``'s line (the load average says whether other work shared the CPU)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def machine(versions: dict) -> dict:
    """CPU model, cores, Python, the given package versions and the measured commit."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0], "ours": versions,
            "code": git_state()}


def write_result(path: Path, payload: dict) -> None:
    """``payload`` as indented JSON at ``path``: written aside and renamed, so a run stopped mid-write leaves
    the last complete result in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    partial.replace(path)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def git_state() -> str:
    """The commit measured, and whether src/ had uncommitted changes (they are measured too)."""
    head, dirty = (subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
                   for args in (("rev-parse", "--short", "HEAD"), ("status", "--porcelain", "src")))
    return head + (" + uncommitted src/ changes" if dirty else "")
