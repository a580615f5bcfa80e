"""The guest: a busybox initramfs, the ext4 data disk, and one qemu boot that runs the probe.

``build_initramfs`` packs busybox, the probe, its spec, an ``/init`` script
and the kernel modules the guest needs (virtio_blk and ext4, virtio_pci where
it is a module, crc32c for ext4's checksums, and what they depend on, read
from each module's ``.modinfo`` ``depends=``: the Debian package ships no
``modules.dep``; ``.ko.xz`` modules are unpacked) into a gzipped newc cpio,
written byte for byte the same for the same inputs.

``make_data_disk`` makes the ext4 image holding the config's files
(``mkfs.ext4 -d``, sized from them; the files are filled with a non-zero
pattern so that every block is really on the disk: e2fsprogs leaves zero
blocks out, and a hole would read with no IO).

``boot`` runs qemu under TCG (``-accel tcg,thread=multi -cpu max``; this
machine has no nested KVM) with the data disk on virtio-blk, ``cache=none``,
throttled by ``throttling.iops-total``/``throttling.bps-total``, and a second
raw disk the guest writes its results to. The console (serial, on qemu's
stdout) is watched for the init script's markers; a panic, an oops, the boot
timeout or the run timeout ends the boot with ``GuestError`` carrying the
last console lines.
"""

from __future__ import annotations

import collections
import gzip
import io
import lzma
import pathlib
import re
import subprocess
import threading
import time
from collections.abc import Callable

from actors.lab.realkernel.host import Kernel, RealKernelError

#: Modules the guest loads, beside what they depend on (names as in modinfo).
ROOT_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
#: Console markers the init script prints.
BOOTED, DONE = "@@FAULTPATH BOOTED", "@@FAULTPATH DONE"
#: Console lines that end a boot as failed.
_FATAL = re.compile(r"Kernel panic|BUG: |Oops|general protection fault|probe error: ")
RESULTS_DISK_BYTES = 64 << 20
CONSOLE_LINES = 25

#: The swap file on the data disk (``[swap] size``), turned on by the init script.
SWAP_FILE = ".swapfile"

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp/out /data
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m.ko || echo "probe error: insmod $m failed"; done
mount -t cgroup2 none /sys/fs/cgroup
echo "+io +memory" > /sys/fs/cgroup/cgroup.subtree_control
n=0; while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do n=$((n+1)); [ $n -gt 200 ] && echo "probe error: no virtio disks" && poweroff -f; sleep 0.05; done
mount -t ext4 -o noatime /dev/vda /data || echo "probe error: cannot mount the data disk"
echo {read_ahead_kb} > /sys/block/vda/queue/read_ahead_kb
{swap}
echo "{booted} $(uname -r)"
/probe /spec /tmp/out
rc=$?
(for f in /tmp/out/*.samples /tmp/out/kernel.vmstat /tmp/out/kernel.stacks; do [ -f "$f" ] || continue; echo "F ${{f##*/}}"; cat "$f"; done; echo "@@END rc=$rc") > /tmp/results
dd if=/tmp/results of=/dev/vdb bs=1M conv=fsync 2>/dev/null
sync
echo "{done} rc=$rc"
poweroff -f
"""


class GuestError(RealKernelError):
    """The guest failed: the message ends with the last console lines."""


def _module_index(kernel: Kernel) -> dict[str, pathlib.Path]:
    index = {}
    for path in sorted((kernel.modules / "kernel").rglob("*.ko*")):
        name = path.name.split(".ko")[0].replace("-", "_")
        index[name] = path
    return index


def _module_bytes(path: pathlib.Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def _depends(data: bytes) -> list[str]:
    match = re.search(rb"(?:^|\0)depends=([^\0]*)", data)
    return [d.replace("-", "_") for d in match.group(1).decode().split(",") if d] if match else []


def guest_modules(kernel: Kernel) -> list[tuple[str, bytes]]:
    """The modules to load, dependencies first: (name, uncompressed .ko); built-in ones are left out."""
    index = _module_index(kernel)
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in index:  # not a module: built in
            return
        seen.add(name)
        data = _module_bytes(index[name])
        for dep in _depends(data):
            visit(dep)
        order.append((name, data))

    for root in ROOT_MODULES:
        visit(root)
    if "virtio_blk" not in seen and kernel.options().get("CONFIG_VIRTIO_BLK") != "y":
        raise RealKernelError(f"kernel {kernel.version}: no virtio_blk module in the package")
    return order


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries, with fixed inode numbers and times."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def swap_commands(swap_bytes: int, page_cluster: int) -> str:
    """The init script's lines that turn on the swap file (none without swap)."""
    if not swap_bytes:
        return ""
    return (
        f'mkswap /data/{SWAP_FILE} >/dev/null && swapon /data/{SWAP_FILE} || echo "probe error: swapon {SWAP_FILE} failed"\n'
        f"echo {page_cluster} > /proc/sys/vm/page-cluster"
    )


def build_initramfs(kernel: Kernel, busybox: pathlib.Path, probe: pathlib.Path, spec: str, read_ahead_kb: int, *, swap_bytes: int = 0, page_cluster: int = 3) -> bytes:
    """The gzipped initramfs (see the module docstring)."""
    modules = guest_modules(kernel)
    directory, regular, executable = 0o040755, 0o100644, 0o100755
    entries = [(d, directory, b"") for d in ("bin", "sbin", "modules", "proc", "sys", "dev", "tmp", "data")]
    entries += [
        ("bin/busybox", executable, busybox.read_bytes()),
        ("probe", executable, probe.read_bytes()),
        ("spec", regular, spec.encode()),
        ("init", executable, INIT.format(read_ahead_kb=read_ahead_kb, swap=swap_commands(swap_bytes, page_cluster), booted=BOOTED, done=DONE).encode()),
        ("modules.order", regular, "".join(f"{name}\n" for name, _ in modules).encode()),
    ]
    entries += [(f"modules/{name}.ko", regular, data) for name, data in modules]
    return gzip.compress(_cpio(entries), compresslevel=6, mtime=0)


def data_disk_bytes(files: dict[str, int]) -> int:
    """The data disk's size: the files, an eighth more for ext4's metadata, and 32 MiB, in whole MiB."""
    total = sum(files.values())
    return -(-(total + total // 8 + (32 << 20)) // (1 << 20)) << 20


def make_data_disk(mkfs: str, files: dict[str, int], where: pathlib.Path) -> pathlib.Path:
    """The ext4 image holding *files* (name -> size), made in *where*."""
    content = where / "data"
    content.mkdir()
    block = bytes(((i * 131) % 251) + 1 for i in range(1 << 16)) * 16  # 1 MiB, no zero byte
    for name, size in files.items():
        with open(content / name, "wb") as out:
            for offset in range(0, size, len(block)):
                out.write(block[: min(len(block), size - offset)])
    image = where / "data.img"
    with open(image, "wb") as out:
        out.truncate(data_disk_bytes(files))
    args = [mkfs, "-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-U", "clear", "-d", str(content), str(image)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RealKernelError(f"mkfs.ext4 -d failed: {(done.stderr.strip().splitlines() or ['(no message)'])[-1]}")
    for name in files:
        (content / name).unlink()
    content.rmdir()
    return image


def qemu_args(qemu: str, kernel: Kernel, initrd: pathlib.Path, data: pathlib.Path, results: pathlib.Path, iops: int, bps: int) -> list[str]:
    """The qemu command line of one boot."""
    throttle = f"throttling.iops-total={iops},throttling.bps-total={bps}"
    return [
        qemu, "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "1024",
        "-nographic", "-no-reboot", "-net", "none", "-serial", "stdio", "-monitor", "none",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
        "-drive", f"file={data},format=raw,if=none,id=data,cache=none,aio=threads,{throttle}",
        "-device", "virtio-blk-pci,drive=data",
        "-drive", f"file={results},format=raw,if=none,id=results,cache=none",
        "-device", "virtio-blk-pci,drive=results",
    ]  # fmt: skip


def boot(args: list[str], *, boot_timeout: float, run_timeout: float, on_phase: Callable[[str], None] = lambda _p: None) -> list[str]:
    """Run qemu *args* to the end; the console lines.

    ``on_phase("run")`` is called when the guest has booted. Raises
    ``GuestError`` on a panic/oops/probe error line, a timeout (*boot_timeout*
    to the boot marker, then *run_timeout* to the done marker), or a guest
    that stops without the done marker; the message ends with the last lines.
    """
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    state = {"booted": None, "done": False, "fatal": None}

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            lines.append(line)
            if BOOTED in line:
                state["booted"] = time.monotonic()
            elif DONE in line:
                state["done"] = True
            elif state["fatal"] is None and _FATAL.search(line):
                state["fatal"] = line

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    started = time.monotonic()
    reported = False
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if state["booted"] is not None and not reported:
                on_phase("run")
                reported = True
            if state["fatal"] is not None and "panic" in state["fatal"].lower():
                break
            if state["booted"] is None and now - started > boot_timeout:
                raise GuestError(_tail(f"the guest did not boot within {boot_timeout:.0f} s", lines))
            if state["booted"] is not None and now - state["booted"] > run_timeout:
                raise GuestError(_tail(f"the guest did not finish its run within {run_timeout:.0f} s", lines))
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        thread.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    if state["fatal"] is not None:
        raise GuestError(_tail(f"the guest failed: {state['fatal'].strip()}", lines))
    if not state["done"]:
        raise GuestError(_tail(f"the guest stopped before finishing its run (qemu exit status {proc.returncode})", lines))
    return lines


def _tail(message: str, lines: list[str]) -> str:
    last = collections.deque((line for line in lines if line.strip()), maxlen=CONSOLE_LINES)
    return message + "; the console's last lines:\n" + "\n".join(f"  | {line}" for line in last)
