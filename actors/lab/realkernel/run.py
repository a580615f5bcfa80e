"""``emu kernel-run``: one config on one or more real kernels, into a run directory.

For each kernel, in order, one phase each (``on_phase`` reports them):
``fetch`` (the Debian package, cached), ``initramfs``, ``image`` (the ext4
data disk), ``boot`` (qemu to the init script's marker), ``run`` (the probe,
for the config's horizon), ``collect`` (the results disk parsed). Kernels
boot one after another, never two qemu at once.

Everything is checked before the first boot: the host's tools, the config's
translation (``spec.translate``: what the probe cannot run is refused), and
every kernel's options. A boot's files live in a temporary directory beside
the run directory; the run directory is written as ``emu run`` writes one
(``results.json``, ``config.toml``, ``replay.json``, one directory per
kernel with its console log and samples), into a sibling and renamed into
place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import orjson

from actors.lab.output import OutputError, check_out_dir, dumps_json, move_into_place, sibling_dir
from actors.lab.realkernel.guest import RESULTS_DISK_BYTES, boot, build_initramfs, make_data_disk, qemu_args
from actors.lab.realkernel.host import check_kernel_config, check_tools, fetch_kernel
from actors.lab.realkernel.probe import build_probe
from actors.lab.realkernel.samples import parse_results, run_entry
from actors.lab.realkernel.spec import translate
from actors.lab.rundir import CONFIG_COPY, INCOMPLETE, REPLAY, RESULTS, SAMPLES, policy_dir_name
from actors.schema import ExperimentConfig

PHASES = ("fetch", "initramfs", "image", "boot", "run", "collect")
#: Host seconds allowed for a boot to reach the init script (TCG boots take 8-13 s here).
BOOT_TIMEOUT = 120.0
CONSOLE_LOG = "console.log"


def run_timeout(horizon_ns: int) -> float:
    """Host seconds from boot to the guest's done marker: the horizon, slowed by TCG, plus a margin."""
    return 60.0 + 5 * horizon_ns / 1e9


def kernel_run(
    config: ExperimentConfig,
    versions: list[str],
    out: pathlib.Path,
    *,
    force: bool = False,
    on_phase: Callable[[str, str], None] = lambda _v, _p: None,
) -> dict[str, Any]:
    """Run *config* on each kernel of *versions*; write the run directory *out*; its results.json document.

    Raises:
        RealKernelError, ConfigError, OutputError: one line (the guest's errors end with its last console lines).
    """
    scenario = translate(config)
    tools = check_tools()
    check_out_dir(out, force=force, experiment=config.name)
    kernels = []
    for version in versions:
        on_phase(version, "fetch")
        kernel = fetch_kernel(version)
        check_kernel_config(config, version, kernel.options())
        kernels.append(kernel)
    probe = build_probe(tools["gcc"])
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling_dir(out, "tmp")
    runs = []
    try:
        (staging / INCOMPLETE).write_bytes(b"emu kernel-run is writing this directory\n")
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.guest-") as tmp:
            work = pathlib.Path(tmp)
            for kernel in kernels:
                on_phase(kernel.version, "initramfs")
                initrd = work / "initrd.gz"
                initrd.write_bytes(build_initramfs(kernel, pathlib.Path(tools["busybox"]), probe, scenario.spec, scenario.read_ahead_kb, swap_bytes=scenario.swap_bytes, page_cluster=scenario.page_cluster))
                on_phase(kernel.version, "image")
                shutil.rmtree(work / "disk", ignore_errors=True)
                (work / "disk").mkdir()
                data = make_data_disk(tools["mkfs.ext4"], scenario.files, work / "disk")
                results = work / "results.img"
                with open(results, "wb") as raw:
                    raw.truncate(0)
                    raw.truncate(RESULTS_DISK_BYTES)
                on_phase(kernel.version, "boot")
                args = qemu_args(tools["qemu"], kernel, initrd, data, results, scenario.iops, scenario.bps)
                lines = boot(args, boot_timeout=BOOT_TIMEOUT, run_timeout=run_timeout(config.horizon), on_phase=lambda p, v=kernel.version: on_phase(v, p))
                on_phase(kernel.version, "collect")
                text = results.read_bytes().split(b"\0", 1)[0].decode(errors="replace")
                guest = parse_results(text, tuple(t.name for p in config.processes for t in p.threads))
                entry = run_entry(kernel.version, kernel.release, guest, config.horizon, config.seed)
                runs.append(entry)
                run_dir = staging / policy_dir_name(entry["policy"])
                run_dir.mkdir()
                (run_dir / CONSOLE_LOG).write_text("\n".join(lines) + "\n")
                (run_dir / SAMPLES).write_bytes(orjson.dumps({"policy": entry["policy"], "samples": {f"{t}/{o}": v for (t, o), v in sorted(guest.samples.items())}}))
        document = {"schema": 1, "experiment": config.name, "config_sha256": _digest(config), "runs": runs}
        (staging / RESULTS).write_bytes(dumps_json(document))
        shutil.copyfile(config.source, staging / CONFIG_COPY)
        replay = {"config": str(pathlib.Path(config.source).resolve()), "config_copy": CONFIG_COPY, "policies": [r["policy"] for r in runs], "seed": config.seed, "tie_seed": None, "real_kernel": True}
        (staging / REPLAY).write_bytes(dumps_json(replay))
        (staging / INCOMPLETE).unlink()
        move_into_place(staging, out.absolute())
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{out}: writing failed: {error.strerror or error}; nothing was written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return document


def _digest(config: ExperimentConfig) -> str:
    from actors.lab.experiment import config_digest

    return config_digest(config)
