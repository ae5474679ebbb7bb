"""Programs from Debian packages, installed with apt-get the first time they are needed.

A fresh machine (CI included) has nothing installed by hand: Redis for
``bse-predict services`` and Prometheus for the monitoring tests come from here.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from bse_predict.services.local_service import Progress, ServicesError, last_error_line, require_program

__all__ = ["debian_program"]


def debian_program(program: str, package: str, progress: Progress) -> str:
    """The full path of ``program``, installed from Debian's ``package`` with apt-get when missing and we are root."""
    found = shutil.which(program)
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ServicesError(f"{program} is not installed; install it (e.g. apt-get install {package})")
    progress(f"installing {package} with apt-get (once)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update", "-q"], ["install", "-y", "-q", package]):
        result = subprocess.run([apt, *args], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            reason = last_error_line(result.stdout + result.stderr)
            raise ServicesError(f"could not install {package} (apt-get {args[0]}): {reason}")
    return require_program(program, f"apt-get installed {package}, yet it is not on PATH")
