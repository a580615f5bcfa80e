"""emu: a deterministic discrete-event engine whose processes are Trio actors.

Domain-free: nothing here knows about kernels. The emulated kernel lives in
``actors`` and imports this package; this package never imports it.
"""

from emu.actor import Actor, Envelope
from emu.engine import Engine, RunStats
from emu.errors import (
    ActorCrashed,
    EmulatorError,
    HungTaskError,
    KernelBug,
    LivelockError,
)
from emu.perfetto import PerfettoTrace
from emu.rng import Streams, derive_seed
from emu.time import (
    NSEC_PER_MSEC,
    NSEC_PER_SEC,
    NSEC_PER_USEC,
    format_ns,
    parse_duration,
    parse_bandwidth,
    parse_size,
)
from emu.trace import Trace, bind_logger, read_jsonl
from emu.waitqueue import WaitQueue

__all__ = [
    "NSEC_PER_MSEC",
    "NSEC_PER_SEC",
    "NSEC_PER_USEC",
    "Actor",
    "ActorCrashed",
    "EmulatorError",
    "Engine",
    "Envelope",
    "HungTaskError",
    "KernelBug",
    "LivelockError",
    "PerfettoTrace",
    "RunStats",
    "Streams",
    "Trace",
    "WaitQueue",
    "bind_logger",
    "derive_seed",
    "format_ns",
    "parse_duration",
    "parse_bandwidth",
    "parse_size",
    "read_jsonl",
]
