"""The names of loggerhub's system metrics, so that every plugin maps the same series natively.

loggerhub's sampler journals each sample as metric points under ``system/``, reaching plugins
through ``loggerhub_log_system_metrics``. A plugin translates each :class:`SystemKey` to its
tracker's own name (MLflow ``system/cpu_utilization_percentage``, Neptune
``monitoring/<hash>/cpu``, ...) with :func:`parse_system_key`, and passes a name it does not know
through unchanged (a newer loggerhub may sample more).

.. versionadded:: 0.3
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SystemKey(str, enum.Enum):
    """A host- or process-wide series. Rates are per second over the last sampling interval."""

    #: CPU use of the whole machine, 0-100.
    CPU_PERCENT = "system/cpu_percent"
    #: CPU use of the training process and its children, where 100 is one full core.
    PROCESS_CPU_PERCENT = "system/process_cpu_percent"
    #: Resident memory of the training process and its children.
    PROCESS_MEMORY_MB = "system/process_memory_mb"
    #: Memory in use on the machine (total minus available).
    MEMORY_USED_MB = "system/memory_used_mb"
    MEMORY_PERCENT = "system/memory_percent"
    #: Disk space used and free on the run directory's filesystem.
    DISK_USED_MB = "system/disk_used_mb"
    DISK_FREE_MB = "system/disk_free_mb"
    DISK_READ_MB_S = "system/disk_read_mb_s"
    DISK_WRITE_MB_S = "system/disk_write_mb_s"
    NETWORK_RECEIVE_MB_S = "system/network_receive_mb_s"
    NETWORK_TRANSMIT_MB_S = "system/network_transmit_mb_s"


class GpuQuantity(str, enum.Enum):
    """A per-GPU series, journaled as ``system/gpu/<index>/<quantity>``."""

    UTILIZATION_PERCENT = "utilization_percent"
    MEMORY_USED_MB = "memory_used_mb"
    MEMORY_TOTAL_MB = "memory_total_mb"
    MEMORY_PERCENT = "memory_percent"
    TEMPERATURE_C = "temperature_c"
    POWER_W = "power_w"


def gpu_key(index: int, quantity: GpuQuantity) -> str:
    """The journal key of one GPU's series: ``system/gpu/0/utilization_percent``."""
    return f"system/gpu/{index}/{quantity.value}"


@dataclass(frozen=True, slots=True)
class ParsedSystemKey:
    """A system metric key, parsed: a host series, or one GPU's series (``gpu`` is its index)."""

    host: SystemKey | None = None
    gpu: int | None = None
    gpu_quantity: GpuQuantity | None = None


def parse_system_key(key: str) -> ParsedSystemKey | None:
    """What a ``system/...`` key names, or ``None`` for a name this version does not know."""
    try:
        return ParsedSystemKey(host=SystemKey(key))
    except ValueError:
        pass
    parts = key.split("/")
    if len(parts) == 4 and parts[:2] == ["system", "gpu"] and parts[2].isdigit():
        try:
            return ParsedSystemKey(gpu=int(parts[2]), gpu_quantity=GpuQuantity(parts[3]))
        except ValueError:
            return None
    return None


def seconds_since_start(timestamp: float, started_at: float) -> int:
    """The step a tracker that needs one gives a system sample: whole seconds since the run
    started. It grows with wall time, the axis of these series, and stays the same when the
    sample is delivered again or the run is resumed."""
    return max(0, int(timestamp - started_at))


@dataclass(frozen=True)
class NativeNames:
    """A tracker's own names for loggerhub's system series, both ways, for a tracker that names a
    GPU's series ``<gpu_prefix><index>.<name>`` (``sys.gpu.0.gpu_utilization``).

    :param host: ``SystemKey`` value -> (the tracker's name, factor from loggerhub's unit to its).
    :param gpu: ``GpuQuantity`` value -> (the tracker's name after the GPU's index, factor).
    :param gpu_prefix: what comes before a GPU's index (``"sys.gpu."``).
    :param own_prefix: where a series the tracker does not sample goes, under loggerhub's name
        with ``.`` for ``/`` (``"sys.loggerhub."`` + ``process_cpu_percent``).
    """

    host: dict[str, tuple[str, float]]
    gpu: dict[str, tuple[str, float]]
    gpu_prefix: str
    own_prefix: str

    def native(self, key: str) -> tuple[str, float] | None:
        """The tracker's name for a system key and the factor to its unit; ``None`` for a key
        this version does not know."""
        parsed = parse_system_key(key)
        if parsed is None:
            return None
        if key in self.host:
            return self.host[key]
        if parsed.gpu is not None and parsed.gpu_quantity is not None and parsed.gpu_quantity.value in self.gpu:
            name, factor = self.gpu[parsed.gpu_quantity.value]
            return f"{self.gpu_prefix}{parsed.gpu}.{name}", factor
        return self.own_prefix + key.removeprefix("system/").replace("/", "."), 1.0

    def key(self, name: str) -> tuple[str, float] | None:
        """The system key of one of the tracker's series (its own, or one :meth:`native` named)
        and the factor back to loggerhub's unit; ``None`` for a series loggerhub has no name for."""
        for key, (native, factor) in self.host.items():
            if name == native:
                return key, 1 / factor
        if name.startswith(self.gpu_prefix):
            index, _, rest = name[len(self.gpu_prefix):].partition(".")
            for quantity, (native, factor) in self.gpu.items():
                if index.isdigit() and rest == native:
                    return gpu_key(int(index), GpuQuantity(quantity)), 1 / factor
        if name.startswith(self.own_prefix):
            key = "system/" + name[len(self.own_prefix):].replace(".", "/")
            if parse_system_key(key) is not None:
                return key, 1.0
        return None
