"""The probe binary: ``probe.c`` (shipped in this package) compiled statically on first use.

The binary is cached under ``<cache>/probe/<sha256 of the source>/probe``,
so an edited source is rebuilt and an unchanged one never is. It is built in
a temporary directory and renamed into place, so a failed or interrupted
build leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import pathlib
import subprocess
import tempfile

from actors.lab.realkernel.host import RealKernelError, cache_root

CFLAGS = ["-O2", "-Wall", "-static", "-pthread"]


def probe_source() -> bytes:
    """The probe's C source, as shipped in the package."""
    return importlib.resources.files("actors.lab.realkernel").joinpath("probe.c").read_bytes()


def build_probe(gcc: str) -> pathlib.Path:
    """The compiled probe for the current source (built with *gcc* if not cached).

    Raises:
        RealKernelError: gcc failed (its last line of output), e.g. no static libc.
    """
    source = probe_source()
    home = cache_root() / "probe" / hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    binary = home / "probe"
    if binary.is_file():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home, prefix=".build-") as tmp:
        src = pathlib.Path(tmp) / "probe.c"
        src.write_bytes(source)
        out = pathlib.Path(tmp) / "probe"
        done = subprocess.run([gcc, *CFLAGS, "-o", str(out), str(src), "-lm"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RealKernelError(f"compiling the probe with {gcc} failed (a static libc is in libc6-dev): {last}")
        os.replace(out, binary)
    return binary
