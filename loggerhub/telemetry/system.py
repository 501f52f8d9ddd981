"""System metrics: one sample of the host, the training process and its GPUs.

psutil reads the host and the process; NVIDIA's management library (``nvidia-ml-py``, imported
as ``pynvml``) reads the GPUs when it loads and finds a driver. Without one there are no GPU series,
and nothing is printed: most machines have no NVIDIA GPU and that is not a problem.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

from loggerhub_hookspecs.telemetry import GpuQuantity, SystemKey, gpu_key

_MB = 1024 * 1024


class Gpus:
    """The GPUs NVML sees, open for sampling; empty when NVML is absent or finds no driver."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no library, no driver, no GPU: no GPU series
            return
        self._nvml = pynvml
        try:
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001
            self.close()

    def names(self) -> list[str]:
        names = []
        for handle in self.handles:
            with contextlib.suppress(Exception):
                name = self._nvml.nvmlDeviceGetName(handle)
                names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names

    def sample(self, into: dict[str, float]) -> None:
        """Each GPU's series; a quantity a GPU does not report (power on some boards) is left out."""
        nvml = self._nvml
        for index, handle in enumerate(self.handles):
            with contextlib.suppress(Exception):
                into[gpu_key(index, GpuQuantity.UTILIZATION_PERCENT)] = float(
                    nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            with contextlib.suppress(Exception):
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                into[gpu_key(index, GpuQuantity.MEMORY_USED_MB)] = memory.used / _MB
                into[gpu_key(index, GpuQuantity.MEMORY_TOTAL_MB)] = memory.total / _MB
                if memory.total:
                    into[gpu_key(index, GpuQuantity.MEMORY_PERCENT)] = 100.0 * memory.used / memory.total
            with contextlib.suppress(Exception):
                into[gpu_key(index, GpuQuantity.TEMPERATURE_C)] = float(
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            with contextlib.suppress(Exception):
                into[gpu_key(index, GpuQuantity.POWER_W)] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        self._nvml, self.handles = None, []


def gpu_names() -> list[str]:
    """The model of each GPU NVML sees (for the context record); empty without NVML."""
    gpus = Gpus()
    try:
        return gpus.names()
    finally:
        gpus.close()


class SystemSampler:
    """Takes samples of the host, this process (and its children, except ``exclude``'s pids:
    loggerhub's own delivery processes) and the GPUs. Rates and CPU percentages cover the time
    since the previous sample (the first, since the sampler was made)."""

    def __init__(self, disk_path: Path, exclude: Callable[[], Iterable[int]] = tuple) -> None:
        self._disk_path = disk_path
        self._exclude = exclude
        self._process = psutil.Process()
        self._children: dict[int, psutil.Process] = {}
        self._gpus = Gpus()
        # Prime the counters: cpu_percent and the I/O rates compare with the previous call.
        self._process.cpu_percent(None)
        psutil.cpu_percent(None)
        self._last = time.monotonic()
        self._disk_io = _counters(psutil.disk_io_counters)
        self._net_io = _counters(psutil.net_io_counters)
        self._children_now()

    def _children_now(self) -> list[psutil.Process]:
        """This process's children, the same Process objects as last time (cpu_percent keeps its
        previous reading in them), loggerhub's own delivery processes left out."""
        try:
            found = self._process.children(recursive=True)
        except psutil.Error:
            return []
        excluded = set(self._exclude())
        current = {}
        for child in found:
            if child.pid in excluded:
                continue
            known = self._children.get(child.pid)
            if known is None:
                with contextlib.suppress(psutil.Error):
                    child.cpu_percent(None)  # primed: its first reading counts from now
                known = child
            current[child.pid] = known
        self._children = current
        return list(current.values())

    def sample(self) -> dict[str, float]:
        values: dict[str, float] = {}
        now = time.monotonic()
        elapsed = max(now - self._last, 1e-6)
        self._last = now
        values[SystemKey.CPU_PERCENT.value] = float(psutil.cpu_percent(None))
        process_cpu, rss = 0.0, 0
        for process in [self._process, *self._children_now()]:
            try:
                with process.oneshot():
                    process_cpu += process.cpu_percent(None)
                    rss += process.memory_info().rss
            except psutil.Error:
                continue  # it ended between the listing and the reading
        values[SystemKey.PROCESS_CPU_PERCENT.value] = process_cpu
        values[SystemKey.PROCESS_MEMORY_MB.value] = rss / _MB
        memory = psutil.virtual_memory()
        values[SystemKey.MEMORY_USED_MB.value] = (memory.total - memory.available) / _MB
        values[SystemKey.MEMORY_PERCENT.value] = float(memory.percent)
        with contextlib.suppress(OSError):
            disk = psutil.disk_usage(str(self._disk_path))
            values[SystemKey.DISK_USED_MB.value] = disk.used / _MB
            values[SystemKey.DISK_FREE_MB.value] = disk.free / _MB
        disk_io = _counters(psutil.disk_io_counters)
        if disk_io is not None and self._disk_io is not None:
            values[SystemKey.DISK_READ_MB_S.value] = _rate(disk_io.read_bytes, self._disk_io.read_bytes, elapsed)
            values[SystemKey.DISK_WRITE_MB_S.value] = _rate(disk_io.write_bytes, self._disk_io.write_bytes, elapsed)
        self._disk_io = disk_io
        net_io = _counters(psutil.net_io_counters)
        if net_io is not None and self._net_io is not None:
            values[SystemKey.NETWORK_RECEIVE_MB_S.value] = _rate(net_io.bytes_recv, self._net_io.bytes_recv, elapsed)
            values[SystemKey.NETWORK_TRANSMIT_MB_S.value] = _rate(net_io.bytes_sent, self._net_io.bytes_sent,
                                                                  elapsed)
        self._net_io = net_io
        self._gpus.sample(values)
        return values

    def close(self) -> None:
        self._gpus.close()


def _counters(read: Callable[[], Any]) -> Any:
    """System-wide I/O counters, or None where the platform (a container, a sandbox) has none."""
    try:
        return read()
    except (OSError, RuntimeError, psutil.Error):
        return None


def _rate(now: int, before: int, elapsed: float) -> float:
    # Counters restart (a device removed, a wrap): a negative delta is no traffic, not a huge rate.
    return max(0, now - before) / _MB / elapsed
