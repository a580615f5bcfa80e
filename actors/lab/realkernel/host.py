"""The host side of a real-kernel run: the tools it needs and the Debian kernels it boots.

``check_tools()`` finds ``qemu-system-x86_64``, a static ``busybox``, ``gcc``
and ``mkfs.ext4``; a missing one is one line with the ``apt-get install``
line that brings it. ``fetch_kernel(version)`` downloads a Debian kernel
package (never installs it: ``apt-get download`` then ``dpkg-deb -x``) into
``~/.cache/faultpath/kernels/<version>/`` (``$FAULTPATH_CACHE`` overrides the
root) and returns its vmlinuz, config and modules:

=========  ==============================================================
version    where the package comes from
=========  ==============================================================
``6.1``    bookworm's ``linux-image-amd64`` (bookworm, bookworm-security)
``6.12``   bookworm's ``linux-image-6.12-amd64`` (bookworm-security)
``5.10``   bullseye's ``linux-image-amd64`` (bullseye, bullseye-security)
=========  ==============================================================

Each through a private apt directory under the cache (its own sources,
lists and archive cache, updated on first use): the system's apt sources
and state are never touched nor relied on.

``check_kernel_config()`` names the options a config needs that a kernel
lacks (io.max needs ``CONFIG_BLK_DEV_THROTTLING``, io.latency
``CONFIG_BLK_CGROUP_IOLATENCY``, which no Debian kernel has).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import tempfile

import attrs

from actors.schema import ExperimentConfig


class RealKernelError(Exception):
    """A real-kernel run cannot go on (one line, for the user; exit 2)."""


#: Tool -> (the executable, the Debian package that has it).
TOOLS = {
    "qemu": ("qemu-system-x86_64", "qemu-system-x86"),
    "busybox": ("busybox", "busybox-static"),
    "gcc": ("gcc", "gcc"),
    "mkfs.ext4": ("mkfs.ext4", "e2fsprogs"),
}

#: Kernel versions and where each package comes from: (apt suites, the meta-package naming the image).
KERNELS = {
    "5.10": (("bullseye", "bullseye-security"), "linux-image-amd64"),
    "6.1": (("bookworm", "bookworm-security"), "linux-image-amd64"),
    "6.12": (("bookworm", "bookworm-security"), "linux-image-6.12-amd64"),
}

#: Config options a config's features need, and what to call the feature in an error.
NEEDED_OPTIONS = {
    "io.max": "CONFIG_BLK_DEV_THROTTLING",
    "io.latency": "CONFIG_BLK_CGROUP_IOLATENCY",
}

_MIRROR = "http://deb.debian.org/debian"
_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def cache_root() -> pathlib.Path:
    """Where kernels and compiled probes are cached (``$FAULTPATH_CACHE`` or ``~/.cache/faultpath``)."""
    env = os.environ.get("FAULTPATH_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "faultpath"


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and name.startswith("mkfs"):
        for base in ("/usr/sbin", "/sbin"):
            if os.access(f"{base}/{name}", os.X_OK):
                return f"{base}/{name}"
    return found


def _busybox_static(path: str) -> bool:
    """Whether the ELF file *path* is statically linked (no ``PT_INTERP``): an initramfs has no libc for a dynamic one."""
    with open(path, "rb") as binary:
        head = binary.read(1 << 16)
    if head[:4] != b"\x7fELF" or head[4] != 2:  # not a 64-bit ELF
        return False
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 4 <= len(head) and struct.unpack_from("<I", head, at)[0] == 3:  # PT_INTERP
            return False
    return True


def check_tools() -> dict[str, str]:
    """Every tool of ``TOOLS`` found on the host, by key.

    Raises:
        RealKernelError: one line naming what is missing and the ``apt-get install`` line that brings it.
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    for key, (exe, package) in TOOLS.items():
        path = _which(exe)
        if key == "busybox" and path is not None and not _busybox_static(path):
            path = None
        if path is None:
            missing.append(package)
        else:
            found[key] = path
    if missing:
        names = ", ".join(missing)
        raise RealKernelError(f"emu kernel-run needs {names}: install with `apt-get install -y {' '.join(missing)}`")
    return found


@attrs.frozen(kw_only=True)
class Kernel:
    """An unpacked Debian kernel package."""

    version: str
    release: str  # uname -r, e.g. 6.1.0-57-amd64
    root: pathlib.Path  # where the package was unpacked

    @property
    def vmlinuz(self) -> pathlib.Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def config_file(self) -> pathlib.Path:
        return self.root / "boot" / f"config-{self.release}"

    @property
    def modules(self) -> pathlib.Path:
        for base in ("lib", "usr/lib"):
            path = self.root / base / "modules" / self.release
            if path.is_dir():
                return path
        return self.root / "lib" / "modules" / self.release

    def options(self) -> dict[str, str]:
        """The kernel's ``CONFIG_*`` settings (``y``/``m``/values; unset options absent)."""
        out = {}
        for line in self.config_file.read_text().splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                key, _, value = line.partition("=")
                out[key] = value
        return out


def _run(args: list[str], what: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RealKernelError(f"{what}: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RealKernelError(f"{what}: {last}")
    return done.stdout


def _private_apt(root: pathlib.Path, suites: tuple[str, ...]) -> list[str]:
    """apt options for a private apt directory under *root* (sources, lists, cache): the system's stay untouched."""
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    security = [s for s in suites if s.endswith("-security")]
    lines = [f"deb [signed-by={_KEYRING}] {_MIRROR} {s} main" for s in suites if s not in security]
    lines += [f"deb [signed-by={_KEYRING}] {_MIRROR}-security {s} main" for s in security]
    (root / "sources.list").write_text("\n".join(lines) + "\n")
    return [
        "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def _resolve(meta: str, apt_options: list[str], version: str) -> str:
    """The versioned image package the meta-package *meta* depends on."""
    out = _run(["apt-cache", *apt_options, "depends", meta], f"kernel {version}: apt-cache depends {meta}")
    for line in out.splitlines():
        dep = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and dep.startswith("linux-image-") and dep[len("linux-image-") :][:1].isdigit():
            return dep
    raise RealKernelError(f"kernel {version}: cannot be had here ({meta} names no linux-image package)")


def fetch_kernel(version: str) -> Kernel:
    """The Debian kernel *version* (``KERNELS``), downloaded and unpacked once into the cache.

    Raises:
        RealKernelError: an unknown version, or a package that cannot be downloaded.
    """
    if version not in KERNELS:
        raise RealKernelError(f"--kernel {version}: not a kernel emu kernel-run can fetch; expected one of {', '.join(KERNELS)}")
    home = cache_root() / "kernels" / version
    done = home / "RELEASE"
    if done.is_file():
        release = done.read_text().strip()
        return Kernel(version=version, release=release, root=home / "root")
    suites, meta = KERNELS[version]
    apt_options = _private_apt(cache_root() / "apt" / suites[0], suites)
    _run(["apt-get", *apt_options, "-q", "update"], f"kernel {version}: apt-get update of the private {suites[0]} lists")
    package = _resolve(meta, apt_options, version)
    release = package.removeprefix("linux-image-").removesuffix("-unsigned")
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home, prefix=".fetch-") as tmp:
        _download(apt_options, package, pathlib.Path(tmp), version)
        debs = sorted(pathlib.Path(tmp).glob("*.deb"))
        if not debs:
            raise RealKernelError(f"kernel {version}: apt-get download {package} left no .deb")
        unpacked = pathlib.Path(tmp) / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], f"kernel {version}: dpkg-deb -x {debs[0].name}")
        kernel = Kernel(version=version, release=release, root=unpacked)
        if not kernel.vmlinuz.is_file() or not kernel.config_file.is_file():
            raise RealKernelError(f"kernel {version}: {debs[0].name} has no boot/vmlinuz-{release} or boot/config-{release}")
        shutil.rmtree(home / "root", ignore_errors=True)
        unpacked.rename(home / "root")
    done.write_text(release + "\n")
    return Kernel(version=version, release=release, root=home / "root")


def _download(apt_options: list[str], package: str, where: pathlib.Path, version: str) -> None:
    """``apt-get download PACKAGE`` into *where* (apt downloads into the current directory)."""
    try:
        done = subprocess.run(["apt-get", *apt_options, "-q", "download", package], cwd=where, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RealKernelError(f"kernel {version}: apt-get download {package}: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RealKernelError(f"kernel {version}: cannot be had here: apt-get download {package}: {last}")


def needed_options(config: ExperimentConfig) -> dict[str, str]:
    """The kernel options *config* needs: feature -> ``CONFIG_*``."""
    out = {}
    if any(c.io_max is not None for c in config.cgroups):
        out["io.max"] = NEEDED_OPTIONS["io.max"]
    if any(c.io_latency is not None for c in config.cgroups):
        out["io.latency"] = NEEDED_OPTIONS["io.latency"]
    return out


def check_kernel_config(config: ExperimentConfig, version: str, options: dict[str, str]) -> None:
    """Refuse a kernel (its ``CONFIG_*`` *options*) that lacks what *config* needs.

    Raises:
        RealKernelError: e.g. ``kernel 6.1 lacks CONFIG_BLK_CGROUP_IOLATENCY (io.latency)``.
    """
    for feature, option in needed_options(config).items():
        if options.get(option) not in ("y", "m"):
            raise RealKernelError(f"{config.source}: kernel {version} lacks {option} ({feature})")
