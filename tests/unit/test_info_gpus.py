"""`pypod info`'s GPU path without a GPU: a small C library built here with `cc` exports the
NVML functions pypod calls, with fixed answers, and is loaded through the same ctypes code
as libnvidia-ml.so.1. It checks the arguments it gets (buffer sizes, pointers), so the test
proves the bindings, the struct layout and the MIG walk; `nvidia-smi -L` parsing runs on
recorded output. Nothing here claims a real GPU was seen."""

# ruff: noqa: E501  (fixture lines are kernel output and C source, kept whole)

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pypod.agent.gpus import (
    Gpu,
    Gpus,
    MigDevice,
    NvmlError,
    find_gpus,
    parse_nvidia_smi_list,
    parse_visible_devices,
    read_nvml,
)
from pypod.agent.resources import gpu_text

FAKE_NVML = r"""
#include <string.h>

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;  /* nvml.h's layout */
typedef struct device { int gpu; int slot; } *nvmlDevice_t;

#define SUCCESS 0
#define INVALID_ARGUMENT 2
#define NOT_SUPPORTED 3
#define NOT_FOUND 6
#define INSUFFICIENT_SIZE 7
#define GiB (1024ULL * 1024 * 1024)

static struct device gpus[2] = {{0, -1}, {1, -1}};
static struct device slices[7] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}, {0, 6}};
static int initialised;

static int put(char *out, unsigned int length, const char *text) {
    if (out == NULL) return INVALID_ARGUMENT;
    if (length < 96) return INSUFFICIENT_SIZE;  /* NVML_DEVICE_NAME_V2_BUFFER_SIZE */
    strncpy(out, text, length - 1);
    out[length - 1] = 0;
    return SUCCESS;
}

int nvmlInit_v2(void) { initialised = 1; return SUCCESS; }
int nvmlShutdown(void) { initialised = 0; return SUCCESS; }
int nvmlSystemGetDriverVersion(char *out, unsigned int length) {
    if (length < 80) return INSUFFICIENT_SIZE;
    strcpy(out, "550.54.15");
    return SUCCESS;
}
int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised) return 1;  /* NVML_ERROR_UNINITIALIZED */
    *count = 2;
    return SUCCESS;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (index > 1) return INVALID_ARGUMENT;
    *device = &gpus[index];
    return SUCCESS;
}
int nvmlDeviceGetName(nvmlDevice_t d, char *out, unsigned int length) {
    if (d->slot >= 0) return put(out, length, "NVIDIA A100-SXM4-80GB MIG 3g.40gb");
    return put(out, length, d->gpu == 0 ? "NVIDIA A100-SXM4-80GB" : "Tesla T4");
}
int nvmlDeviceGetUUID(nvmlDevice_t d, char *out, unsigned int length) {
    if (d->slot == 0) return put(out, length, "MIG-11111111-2222-3333-4444-555555555555");
    if (d->slot == 2) return put(out, length, "MIG-66666666-7777-8888-9999-000000000000");
    return put(out, length, d->gpu == 0 ? "GPU-a100a100-0000-0000-0000-000000000000" : "GPU-t4t4t4t4-1111-1111-1111-111111111111");
}
int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    /* Three different numbers per field, so a wrong struct layout cannot pass. */
    if (d->slot >= 0) { memory->total = 40 * GiB; memory->used = 3 * GiB + d->slot; memory->free = 37 * GiB; }
    else if (d->gpu == 0) { memory->total = 80 * GiB; memory->used = 6 * GiB; memory->free = 74 * GiB; }
    else { memory->total = 16 * GiB; memory->used = 1 * GiB; memory->free = 15 * GiB; }
    return SUCCESS;
}
int nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    if (d->gpu != 0) return NOT_SUPPORTED;
    *current = 1; *pending = 1;
    return SUCCESS;
}
int nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    *count = d->gpu == 0 ? 7 : 0;
    return SUCCESS;
}
int nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *mig) {
    /* This container was given slots 0 and 2; the others are another's, or empty. */
    if (d->gpu != 0 || index >= 7) return INVALID_ARGUMENT;
    if (index != 0 && index != 2) return NOT_FOUND;
    *mig = &slices[index];
    return SUCCESS;
}
"""

GiB = 2**30


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (cc) is needed to build the NVML stand-in; .ci/run installs gcc"
    folder = tmp_path_factory.mktemp("nvml")
    source = folder / "fake_nvml.c"
    source.write_text(FAKE_NVML)
    library = folder / "libnvidia-ml.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    return library


def test_nvml_bindings_read_gpus_memory_and_the_visible_mig_slices(fake_nvml: Path):
    gpus = read_nvml(str(fake_nvml))
    assert (gpus.source, gpus.driver) == ("nvml", "550.54.15")
    a100, t4 = gpus.devices
    assert (a100.index, a100.name, a100.uuid) == (
        0,
        "NVIDIA A100-SXM4-80GB",
        "GPU-a100a100-0000-0000-0000-000000000000",
    )
    assert (a100.memory_total, a100.memory_used, a100.mig_enabled) == (80 * GiB, 6 * GiB, True)
    assert a100.mig_devices == [
        MigDevice(
            0, "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "MIG-11111111-2222-3333-4444-555555555555", 40 * GiB, 3 * GiB
        ),
        MigDevice(
            2, "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "MIG-66666666-7777-8888-9999-000000000000", 40 * GiB, 3 * GiB + 2
        ),
    ]
    assert (t4.name, t4.memory_total, t4.memory_used, t4.mig_enabled, t4.mig_devices) == (
        "Tesla T4",
        16 * GiB,
        GiB,
        None,  # NOT_SUPPORTED: not a MIG-capable part
        [],
    )
    assert gpu_text(gpus) == "2× MIG 3g.40gb (NVIDIA A100-SXM4-80GB)"


def test_the_library_path_comes_from_the_environment_too(fake_nvml: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYPOD_NVML_LIBRARY", str(fake_nvml))
    assert [g.name for g in find_gpus({}).devices] == ["NVIDIA A100-SXM4-80GB", "Tesla T4"]


def test_without_nvml_the_fallbacks_answer_in_order(tmp_path: Path):
    missing = str(tmp_path / "libnvidia-ml.so.1")
    with pytest.raises(NvmlError, match="cannot load"):
        read_nvml(missing)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf 'GPU 0: Tesla T4 (UUID: GPU-t4)\\n'\n")
    smi.chmod(0o755)
    found = find_gpus({"NVIDIA_VISIBLE_DEVICES": "0,1"}, missing, str(smi))
    assert (found.source, [g.name for g in found.devices]) == ("nvidia-smi", ["Tesla T4"])
    assert "NVML: cannot load" in found.note
    found = find_gpus({"NVIDIA_VISIBLE_DEVICES": "GPU-aaa,GPU-bbb"}, missing, str(tmp_path / "no-smi"))
    assert (found.source, [g.uuid for g in found.devices]) == ("NVIDIA_VISIBLE_DEVICES", ["GPU-aaa", "GPU-bbb"])
    none = find_gpus({}, missing, str(tmp_path / "no-smi"))
    assert (none.source, none.devices, gpu_text(none)) == ("none", [], "no GPU")


# Recorded `nvidia-smi -L` output: plain GPUs, and an A100 split into MIG devices (R470+ format).
SMI_PLAIN = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-5e4e7c2a-1b3d-4f5e-8a9b-0c1d2e3f4a5b)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-6f5f8d3b-2c4e-5a6f-9b0c-1d2e3f4a5b6c)
"""
SMI_MIG = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d)
  MIG 3g.20gb     Device  0: (UUID: MIG-2a5d6e7f-8091-5a2b-b3c4-d5e6f7a8b9c0)
  MIG 2g.10gb     Device  1: (UUID: MIG-3b6e7f80-91a2-5b3c-c4d5-e6f7a8b9c0d1)
GPU 1: Tesla T4 (UUID: GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d)
"""


def test_nvidia_smi_list_parsing():
    assert [(g.index, g.name, g.uuid) for g in parse_nvidia_smi_list(SMI_PLAIN)] == [
        (0, "NVIDIA A100-SXM4-80GB", "GPU-5e4e7c2a-1b3d-4f5e-8a9b-0c1d2e3f4a5b"),
        (1, "NVIDIA A100-SXM4-80GB", "GPU-6f5f8d3b-2c4e-5a6f-9b0c-1d2e3f4a5b6c"),
    ]
    a100, t4 = parse_nvidia_smi_list(SMI_MIG)
    assert a100.mig_enabled and [(m.index, m.name, m.uuid) for m in a100.mig_devices] == [
        (0, "3g.20gb", "MIG-2a5d6e7f-8091-5a2b-b3c4-d5e6f7a8b9c0"),
        (1, "2g.10gb", "MIG-3b6e7f80-91a2-5b3c-c4d5-e6f7a8b9c0d1"),
    ]
    assert (t4.name, t4.mig_enabled, t4.mig_devices) == ("Tesla T4", None, [])
    assert gpu_text(Gpus([a100, t4], "nvidia-smi")) == (
        "1× MIG 2g.10gb (NVIDIA A100-SXM4-40GB), 1× MIG 3g.20gb (NVIDIA A100-SXM4-40GB)"
    )
    assert parse_nvidia_smi_list("No devices were found\n") == []


def test_nvidia_visible_devices_values():
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("all") is None  # says nothing of how many
    assert parse_visible_devices("void") == [] and parse_visible_devices("none") == []
    assert parse_visible_devices("0,2") == [Gpu(0), Gpu(2)]


def test_gpu_text_of_whole_gpus():
    gpus = Gpus([Gpu(0, "NVIDIA A100-SXM4-80GB", "u", 80 * GiB)], "nvml")
    assert gpu_text(gpus) == "1× NVIDIA A100-SXM4-80GB 80 GiB"
