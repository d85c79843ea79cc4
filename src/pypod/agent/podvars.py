"""The environment variables pypod's pod spec sets for the agent: kube/podenv.py writes
them, resources.py reads them. Apart from resources.py so that building a Job does not
import the agent's probes. Standard library only; runs on Python >= 3.8.
"""

# Environment variables of the downward API that pypod sets in its pods (resourceFieldRef
# with divisor 1m for cpu and 1 for bytes). Only limits that are set are exposed: an unset
# limit would read as the node's allocatable amount.
DOWNWARD_IDENTITY = {
    "pod_name": "POD_NAME",
    "namespace": "POD_NAMESPACE",
    "node_name": "NODE_NAME",
    "pod_uid": "POD_UID",
}
DOWNWARD_RESOURCES = {
    # field: (env name, resource, divisor)
    "cpu_request": ("POD_CPU_REQUEST_MILLICORES", "requests.cpu", "1m"),
    "cpu_limit": ("POD_CPU_LIMIT_MILLICORES", "limits.cpu", "1m"),
    "memory_request": ("POD_MEMORY_REQUEST_BYTES", "requests.memory", "1"),
    "memory_limit": ("POD_MEMORY_LIMIT_BYTES", "limits.memory", "1"),
    "ephemeral_request": ("POD_EPHEMERAL_STORAGE_REQUEST_BYTES", "requests.ephemeral-storage", "1"),
    "ephemeral_limit": ("POD_EPHEMERAL_STORAGE_LIMIT_BYTES", "limits.ephemeral-storage", "1"),
}
IMAGE_ENV = "POD_IMAGE"  # not PYPOD_IMAGE: that is the `image` setting of a pypod run inside

# Thread pools sized from these instead of every core of the node: OpenMP, MKL, OpenBLAS,
# BLIS, Accelerate, numexpr, Rayon (polars, tokenizers), polars, and Python 3.13's
# os.cpu_count()/os.process_cpu_count().
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "RAYON_NUM_THREADS",
    "POLARS_MAX_THREADS",
    "PYTHON_CPU_COUNT",
)
