"""What produced a run: package versions, threads, device, CPU/GPU model, git commit.

Recorded in every ``config.json`` (``"environment"``) and printed in a study's report.
The same command can give different numbers on two machines: float rounding differs
between CPU models, thread counts and library versions, and training amplifies it. A
resume on a different environment is allowed but warned about, since it cannot
reproduce the uninterrupted run bit for bit.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("m2po-lab", "torch", "numpy", "transformers", "tokenizers", "trl", "accelerate", "streamlit")
COMPARED = ("packages", "torch_threads", "device", "cpu", "gpu", "git_commit", "python")
"""Fields whose change between a run and its resume is worth a warning."""


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The commit of the package's checkout (with '+dirty' for local changes); None if not a git checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def environment(device: str | torch.device = "cpu") -> dict:
    """The environment of this process, as JSON-ready values."""
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" and torch.cuda.is_available() else None
    return {
        "packages": {p: v for p in PACKAGES if (v := _version(p)) is not None},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "git_commit": _git_commit(),
    }


def environment_changes(saved: dict | None, now: dict) -> list[str]:
    """Human-readable differences in :data:`COMPARED` fields between ``saved`` and ``now``."""
    if not saved:
        return ["the run recorded no environment"]
    out = []
    for key in COMPARED:
        a, b = saved.get(key), now.get(key)
        if key == "packages":
            a, b = a or {}, b or {}
            out += [f"{p} {a.get(p)} -> {b.get(p)}" for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]
        elif a != b:
            out.append(f"{key} {a} -> {b}")
    return out


def environment_lines(env: dict) -> list[str]:
    """Markdown bullet lines for a report."""
    pk = env.get("packages", {})
    return [
        f"- packages: {', '.join(f'{k} {v}' for k, v in pk.items())}; Python {env.get('python')}",
        f"- device {env.get('device')}, {env.get('torch_threads')} torch thread(s); CPU {env.get('cpu')} "
        f"({env.get('cpu_count')} cores)" + (f"; GPU {env['gpu']}" if env.get("gpu") else ""),
        f"- platform {env.get('platform')}; package commit {env.get('git_commit') or 'unknown (not a git checkout)'}",
    ]
