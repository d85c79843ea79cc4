"""NVIDIA GPUs seen from this process: NVML through ctypes (no pynvml needed), else
`nvidia-smi -L`, else NVIDIA_VISIBLE_DEVICES. Standard library only; runs on Python >= 3.8.

The NVML calls and structs are those of nvml.h (NVML API Reference): every function returns
an nvmlReturn_t (0 is NVML_SUCCESS); nvmlDevice_t is an opaque pointer; nvmlMemory_t is
three unsigned long longs (total, free, used). A GPU in MIG mode is listed with the MIG
devices this process can see (others answer NOT_FOUND or NO_PERMISSION and are skipped).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

NVML_LIBRARY = "libnvidia-ml.so.1"
LIBRARY_ENV = "PYPOD_NVML_LIBRARY"  # another NVML, e.g. a test's stand-in
NVML_SUCCESS = 0
NVML_DEVICE_MIG_ENABLE = 1
BUFFER = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE, NVML_DEVICE_UUID_V2_BUFFER_SIZE
DRIVER_BUFFER = 80  # NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE


@dataclass
class MigDevice:
    index: int
    name: str = ""
    uuid: str = ""
    memory_total: int | None = None
    memory_used: int | None = None


@dataclass
class Gpu:
    index: int
    name: str = ""
    uuid: str = ""
    memory_total: int | None = None
    memory_used: int | None = None
    mig_enabled: bool | None = None  # None: not MIG-capable or not known
    mig_devices: list[MigDevice] = field(default_factory=list)


@dataclass
class Gpus:
    devices: list[Gpu] = field(default_factory=list)
    source: str = "none"  # nvml, nvidia-smi, NVIDIA_VISIBLE_DEVICES, none
    driver: str = ""
    note: str = ""  # why a richer source was not used


class NvmlError(Exception):
    pass


def _load(library: str):  # type: ignore[no-untyped-def]
    import ctypes

    try:
        return ctypes.CDLL(library)
    except OSError as exc:
        raise NvmlError("cannot load %s: %s" % (library, exc)) from exc


def read_nvml(library: str | None = None) -> Gpus:
    """Every GPU NVML shows this process, with its MIG devices. Raises NvmlError."""
    import ctypes

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    nvml = _load(library or os.environ.get(LIBRARY_ENV) or NVML_LIBRARY)
    device_t = ctypes.c_void_p

    def call(name, *args):  # type: ignore[no-untyped-def]
        try:
            function = getattr(nvml, name)
        except AttributeError:
            return -1
        function.restype = ctypes.c_int
        return function(*args)

    def text(getter, handle, size=BUFFER):  # type: ignore[no-untyped-def]
        buffer = ctypes.create_string_buffer(size)
        if call(getter, handle, buffer, ctypes.c_uint(size)) != NVML_SUCCESS:
            return ""
        return buffer.value.decode("utf-8", "replace")

    def memory(handle):  # type: ignore[no-untyped-def]
        info = Memory()
        if call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(info)) != NVML_SUCCESS:
            return None, None
        return int(info.total), int(info.used)

    code = call("nvmlInit_v2")
    if code != NVML_SUCCESS:
        raise NvmlError("nvmlInit_v2 returned %d" % code)
    try:
        driver = ctypes.create_string_buffer(DRIVER_BUFFER)
        version = ""
        if call("nvmlSystemGetDriverVersion", driver, ctypes.c_uint(DRIVER_BUFFER)) == NVML_SUCCESS:
            version = driver.value.decode("utf-8", "replace")
        count = ctypes.c_uint(0)
        code = call("nvmlDeviceGetCount_v2", ctypes.byref(count))
        if code != NVML_SUCCESS:
            raise NvmlError("nvmlDeviceGetCount_v2 returned %d" % code)
        gpus = []
        for index in range(count.value):
            handle = device_t()
            if call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(handle)) != NVML_SUCCESS:
                continue
            total, used = memory(handle)
            gpu = Gpu(index, text("nvmlDeviceGetName", handle), text("nvmlDeviceGetUUID", handle), total, used)
            current, pending = ctypes.c_uint(0), ctypes.c_uint(0)
            if call("nvmlDeviceGetMigMode", handle, ctypes.byref(current), ctypes.byref(pending)) == NVML_SUCCESS:
                gpu.mig_enabled = current.value == NVML_DEVICE_MIG_ENABLE
            if gpu.mig_enabled:
                slots = ctypes.c_uint(0)
                call("nvmlDeviceGetMaxMigDeviceCount", handle, ctypes.byref(slots))
                for slot in range(slots.value):
                    mig = device_t()
                    found = call("nvmlDeviceGetMigDeviceHandleByIndex", handle, ctypes.c_uint(slot), ctypes.byref(mig))
                    if found != NVML_SUCCESS:
                        continue  # an empty slot, or a slice given to another container
                    mig_total, mig_used = memory(mig)
                    gpu.mig_devices.append(
                        MigDevice(
                            slot, text("nvmlDeviceGetName", mig), text("nvmlDeviceGetUUID", mig), mig_total, mig_used
                        )
                    )
            gpus.append(gpu)
        return Gpus(gpus, "nvml", version)
    finally:
        call("nvmlShutdown")


_SMI_GPU = re.compile(r"^GPU (\d+): (.*?) \(UUID: ([^)]+)\)\s*$")
_SMI_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)]+)\)\s*$")


def parse_nvidia_smi_list(text: str) -> list[Gpu]:
    """`nvidia-smi -L`: "GPU 0: NAME (UUID: GPU-...)" lines, MIG devices indented below
    their GPU ("  MIG 3g.40gb     Device  0: (UUID: MIG-...)")."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        gpu = _SMI_GPU.match(line)
        if gpu:
            gpus.append(Gpu(int(gpu.group(1)), gpu.group(2).strip(), gpu.group(3).strip()))
            continue
        mig = _SMI_MIG.match(line)
        if mig and gpus:
            gpus[-1].mig_enabled = True
            gpus[-1].mig_devices.append(MigDevice(int(mig.group(2)), mig.group(1), mig.group(3).strip()))
    return gpus


def parse_visible_devices(value: str | None) -> list[Gpu] | None:
    """NVIDIA_VISIBLE_DEVICES as the NVIDIA container toolkit reads it: a list of indexes or
    UUIDs, "all", or "none"/"void"/"" for none. None when unset or "all" (no count in it)."""
    if value is None:
        return None
    value = value.strip()
    if value in ("", "none", "void"):
        return []
    if value == "all":
        return None
    gpus = []
    for position, item in enumerate(v.strip() for v in value.split(",") if v.strip()):
        index = int(item) if item.isdigit() else position
        gpus.append(Gpu(index, "", "" if item.isdigit() else item))
    return gpus


def find_gpus(environ: dict[str, str], library: str | None = None, smi: str | None = None) -> Gpus:
    """The best answer available: NVML, then `nvidia-smi -L`, then NVIDIA_VISIBLE_DEVICES."""
    notes = []
    try:
        return read_nvml(library)
    except NvmlError as exc:
        notes.append("NVML: %s" % exc)
    smi = smi or shutil.which("nvidia-smi")
    if smi:
        try:
            result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
            if result.returncode == 0:
                return Gpus(parse_nvidia_smi_list(result.stdout), "nvidia-smi", "", "; ".join(notes))
            notes.append("nvidia-smi -L exited %d" % result.returncode)
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append("nvidia-smi: %s" % exc)
    visible = parse_visible_devices(environ.get("NVIDIA_VISIBLE_DEVICES"))
    if visible is not None:
        return Gpus(visible, "NVIDIA_VISIBLE_DEVICES", "", "; ".join(notes))
    if environ.get("NVIDIA_VISIBLE_DEVICES", "").strip() == "all":
        notes.append("NVIDIA_VISIBLE_DEVICES=all, but neither NVML nor nvidia-smi answers")
    return Gpus([], "none", "", "; ".join(notes))
