"""The reversible mapping between loggerhub's canonical keys and Comet names.

Comet accepts any string as a metric, parameter, image or asset name, so almost every key is
used unchanged. Three things force an escape:

* The SDK writes its own bookkeeping under ``curr_step`` and ``curr_epoch`` (parameters) and
  ``process duration`` (a metric); a user key with one of those names would be mixed with them.
* Image names that start with ``~`` are expanded to the home directory by the SDK.
* The escape character itself must stay unambiguous.

Rule: a key that is reserved, or starts with ``!`` or ``~``, gets one ``!`` prepended; every other
key is used as it is. ``from_tracker`` strips one leading ``!``. The mapping is injective, so two
canonical keys never share a Comet name.

Length is the one thing no reversible rule can fix: the SDK truncates metric and parameter names
longer than :data:`MAX_NAME_LENGTH` characters, which could silently merge two keys. Such keys are
refused with :class:`NameTooLong` instead (the backend turns it into ``Rejected``).
"""

from __future__ import annotations

from loggerhub_hookspecs.telemetry import NativeNames

ESCAPE = "!"
#: Names the Comet SDK writes itself; user keys with these names are escaped.
RESERVED = frozenset({"curr_step", "curr_epoch", "process duration"})
#: comet_ml truncates longer metric and parameter names (``MAXIMAL_KEY_LENGTH``).
MAX_NAME_LENGTH = 100


class NameTooLong(ValueError):
    """A key whose Comet name the SDK would truncate."""


def to_tracker(key: str) -> str:
    """The Comet name for a canonical key."""
    if key in RESERVED or key.startswith((ESCAPE, "~")):
        return ESCAPE + key
    return key


def from_tracker(name: str) -> str:
    """The canonical key for a Comet name written by :func:`to_tracker`."""
    return name[len(ESCAPE):] if name.startswith(ESCAPE) else name


def metric_name(key: str) -> str:
    """The Comet name for a metric or parameter key, or :class:`NameTooLong`."""
    name = to_tracker(key)
    if len(name) > MAX_NAME_LENGTH:
        raise NameTooLong(
            f"key {key[:40]!r}... is {len(name)} characters long as a Comet name; comet_ml truncates "
            f"metric and parameter names to {MAX_NAME_LENGTH}, which could merge it with another key"
        )
    return name


# -- system metrics ----------------------------------------------------------------------------
#
# comet_ml's own system monitor (comet_ml/system) logs ``sys.*`` metrics, which Comet's System
# Metrics tab shows: ``sys.cpu.percent.avg``, ``sys.ram.used`` (bytes, total minus available),
# ``sys.ram.percent.used``, ``sys.disk.read_bps`` / ``write_bps`` (bytes per second),
# ``sys.disk.root.used`` (bytes), ``sys.network.receive_bps`` / ``send_bps``, and per GPU
# ``sys.gpu.<i>.gpu_utilization`` (%), ``used_memory`` / ``total_memory`` (bytes), ``temperature``
# (°C) and ``power_usage`` (milliwatts, as NVML reports it). loggerhub's series Comet does not
# sample go beside them under ``sys.loggerhub.`` (``sys.loggerhub.process_memory_mb``).

BYTES_PER_MB = 2.0**20
SYSTEM_PREFIX = "sys."
OWN_SYSTEM_PREFIX = "sys.loggerhub."

_HOST = {
    "system/cpu_percent": ("sys.cpu.percent.avg", 1.0),
    "system/memory_used_mb": ("sys.ram.used", BYTES_PER_MB),
    "system/memory_percent": ("sys.ram.percent.used", 1.0),
    "system/disk_used_mb": ("sys.disk.root.used", BYTES_PER_MB),
    "system/disk_read_mb_s": ("sys.disk.read_bps", BYTES_PER_MB),
    "system/disk_write_mb_s": ("sys.disk.write_bps", BYTES_PER_MB),
    "system/network_receive_mb_s": ("sys.network.receive_bps", BYTES_PER_MB),
    "system/network_transmit_mb_s": ("sys.network.send_bps", BYTES_PER_MB),
}
_GPU = {
    "utilization_percent": ("gpu_utilization", 1.0),
    "memory_used_mb": ("used_memory", BYTES_PER_MB),
    "memory_total_mb": ("total_memory", BYTES_PER_MB),
    "temperature_c": ("temperature", 1.0),
    "power_w": ("power_usage", 1000.0),
}
_NAMES = NativeNames(_HOST, _GPU, gpu_prefix="sys.gpu.", own_prefix=OWN_SYSTEM_PREFIX)

#: The Comet metric a loggerhub system key becomes and the factor to Comet's unit (None: unknown).
system_metric_name = _NAMES.native
#: The loggerhub system key of a Comet system metric (comet_ml's own or one this backend wrote)
#: and the factor back to loggerhub's unit (None: a metric loggerhub has no name for).
system_key = _NAMES.key
