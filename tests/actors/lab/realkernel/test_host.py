"""Host set-up (actors.lab.realkernel.host): missing tools, kernel versions, kernel options."""

from __future__ import annotations

import pathlib

import pytest

from actors.lab.config import load_config
from actors.lab.realkernel import host
from actors.lab.realkernel.host import RealKernelError, check_kernel_config, check_tools, fetch_kernel

CASES = pathlib.Path(__file__).resolve().parents[4] / "configs" / "realkernel"


def test_missing_qemu_prints_the_apt_get_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = host._which
    monkeypatch.setattr(host, "_which", lambda name: None if name in ("qemu-system-x86_64", "busybox") else real(name) or f"/usr/bin/{name}")
    with pytest.raises(RealKernelError) as error:
        check_tools()
    assert str(error.value) == "emu kernel-run needs qemu-system-x86, busybox-static: install with `apt-get install -y qemu-system-x86 busybox-static`"


def test_a_dynamic_busybox_does_not_count(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not host._busybox_static("/bin/sh")  # the host's dash or bash: dynamically linked
    fake = tmp_path / "busybox"
    fake.write_bytes(b"#!/bin/sh\n")
    monkeypatch.setattr(host, "_which", lambda name: str(fake) if name == "busybox" else f"/usr/bin/{name}")
    with pytest.raises(RealKernelError, match=r"busybox-static"):
        check_tools()


def test_a_static_elf_counts(tmp_path: pathlib.Path) -> None:
    import struct

    header = bytearray(64 + 56)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)  # program headers right after the ELF header
    struct.pack_into("<HH", header, 0x36, 56, 1)
    struct.pack_into("<I", header, 64, 1)  # PT_LOAD only
    (tmp_path / "static").write_bytes(bytes(header))
    assert host._busybox_static(str(tmp_path / "static"))
    struct.pack_into("<I", header, 64, 3)  # PT_INTERP
    (tmp_path / "dynamic").write_bytes(bytes(header))
    assert not host._busybox_static(str(tmp_path / "dynamic"))


def test_unknown_version(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTPATH_CACHE", str(tmp_path))
    with pytest.raises(RealKernelError) as error:
        fetch_kernel("4.19")
    assert str(error.value) == "--kernel 4.19: not a kernel emu kernel-run can fetch; expected one of 5.10, 6.1, 6.12"
    assert not any(tmp_path.iterdir())


def test_a_package_that_cannot_be_had(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTPATH_CACHE", str(tmp_path))
    monkeypatch.setitem(host.KERNELS, "6.1", (("bookworm",), "linux-image-no-such-package-amd64"))
    with pytest.raises(RealKernelError, match=r"^kernel 6.1: "):
        fetch_kernel("6.1")
    assert not (tmp_path / "kernels" / "6.1" / "RELEASE").exists()


def test_io_latency_needs_an_option_no_debian_kernel_has(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text((CASES / "plain.toml").read_text().replace('path = "monitor"', 'path = "monitor"\n"io.latency" = "target=1000"'))
    config = load_config(path)
    options = {"CONFIG_BLK_DEV_THROTTLING": "y", "CONFIG_CGROUPS": "y"}
    with pytest.raises(RealKernelError) as error:
        check_kernel_config(config, "6.1", options)
    assert str(error.value) == f"{path}: kernel 6.1 lacks CONFIG_BLK_CGROUP_IOLATENCY (io.latency)"
    check_kernel_config(config, "6.1", {**options, "CONFIG_BLK_CGROUP_IOLATENCY": "y"})


def test_io_max_needs_blk_dev_throttling() -> None:
    config = load_config(CASES / "iomax-mem.toml")
    with pytest.raises(RealKernelError, match=r"kernel 5.10 lacks CONFIG_BLK_DEV_THROTTLING \(io.max\)$"):
        check_kernel_config(config, "5.10", {})
    check_kernel_config(load_config(CASES / "plain.toml"), "5.10", {})  # no io.max: nothing needed
