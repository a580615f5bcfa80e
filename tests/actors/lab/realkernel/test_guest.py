"""The guest (actors.lab.realkernel.guest): modules, the initramfs, the disk size, the console watch."""

from __future__ import annotations

import gzip
import lzma
import pathlib
import sys

import pytest

from actors.lab.realkernel.guest import BOOTED, DONE, GuestError, _cpio, boot, data_disk_bytes, guest_modules
from actors.lab.realkernel.host import Kernel


def _fake_kernel(tmp_path: pathlib.Path) -> Kernel:
    release = "9.9.0-1-amd64"
    base = tmp_path / "lib" / "modules" / release / "kernel"
    modules = {
        "drivers/block/virtio_blk.ko": b"\0license=GPL\0depends=virtio,virtio_ring\0",
        "drivers/virtio/virtio.ko": b"\0depends=\0",
        "drivers/virtio/virtio_ring.ko.xz": lzma.compress(b"\0depends=virtio\0"),
        "fs/ext4/ext4.ko": b"\0depends=mbcache,jbd2,crc16\0",  # crc16: built in (no file)
        "fs/mbcache.ko": b"\0depends=\0",
        "fs/jbd2/jbd2.ko": b"\0depends=\0",
        "crypto/crc32c_generic.ko": b"\0depends=\0",
    }
    for name, data in modules.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{release}").write_text("CONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_PCI=y\n")
    return Kernel(version="9.9", release=release, root=tmp_path)


def test_modules_come_dependencies_first(tmp_path: pathlib.Path) -> None:
    order = guest_modules(_fake_kernel(tmp_path))
    names = [name for name, _ in order]
    assert names == ["virtio", "virtio_ring", "virtio_blk", "crc32c_generic", "mbcache", "jbd2", "ext4"]
    assert dict(order)["virtio_ring"] == b"\0depends=virtio\0"  # .ko.xz unpacked


def test_cpio_is_newc_and_reproducible() -> None:
    archive = _cpio([("init", 0o100755, b"#!/bin/sh\n"), ("bin", 0o040755, b"")])
    assert archive.startswith(b"070701") and b"TRAILER!!!\0" in archive
    assert len(archive) % 4 == 0
    assert gzip.compress(archive, mtime=0) == gzip.compress(_cpio([("init", 0o100755, b"#!/bin/sh\n"), ("bin", 0o040755, b"")]), mtime=0)


def test_data_disk_size_follows_the_files() -> None:
    assert data_disk_bytes({"data": 64 << 20}) == (64 + 8 + 32) << 20
    assert data_disk_bytes({"a": 1, "b": 1}) == 33 << 20


def _console(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def test_a_panic_shows_the_last_console_lines() -> None:
    script = f"""
print("[0.1] Linux version 6.1.0")
print("{BOOTED} 6.1.0-57-amd64", flush=True)
for i in range(40):
    print(f"[1.{{i}}] line {{i}}")
print("[2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100", flush=True)
import time; time.sleep(30)
"""
    with pytest.raises(GuestError) as error:
        boot(_console(script), boot_timeout=20, run_timeout=20)
    message = str(error.value)
    first, *tail = message.splitlines()
    assert first == "the guest failed: [2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100; the console's last lines:"
    assert len(tail) == 25 and tail[-1].endswith("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100")
    assert tail[0] == "  | [1.16] line 16"


def test_boot_timeout() -> None:
    with pytest.raises(GuestError, match=r"^the guest did not boot within 1 s; the console's last lines:\n  \| SeaBIOS"):
        boot(_console("print('SeaBIOS', flush=True); import time; time.sleep(30)"), boot_timeout=1, run_timeout=20)


def test_a_guest_that_stops_early() -> None:
    with pytest.raises(GuestError, match=r"stopped before finishing its run \(qemu exit status 0\)"):
        boot(_console(f"print('{BOOTED}')"), boot_timeout=20, run_timeout=20)


def test_a_probe_error_fails_the_boot() -> None:
    with pytest.raises(GuestError, match=r"^the guest failed: probe error: mmap of a mapping: Invalid argument;"):
        boot(_console(f"print('{BOOTED}'); print('probe error: mmap of a mapping: Invalid argument'); print('{DONE} rc=3')"), boot_timeout=20, run_timeout=20)


def test_a_clean_run_returns_the_console() -> None:
    phases = []
    lines = boot(_console(f"import time; print('{BOOTED}', flush=True); time.sleep(0.5); print('{DONE} rc=0')"), boot_timeout=20, run_timeout=20, on_phase=phases.append)
    assert lines[-1] == f"{DONE} rc=0" and phases == ["run"]
