"""GPUs the nodes offer, and whether a request for N GPUs of a product can ever be placed.

NVIDIA's GPU feature discovery labels each GPU node with `nvidia.com/gpu.product`
(e.g. NVIDIA-A100-SXM4-80GB); its device plugin advertises `nvidia.com/gpu`. The check
is pure; `read_gpu_offer` is the one request, and a 403 (nodes are cluster-scoped and
often unreadable to users) means "cannot tell", never a failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..quantity import parse_quantity

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
NO_PRODUCT = "(no product label)"


@dataclass(frozen=True)
class NodeGpus:
    node: str
    product: str  # NO_PRODUCT when the node has no product label
    count: int  # allocatable nvidia.com/gpu


def node_gpus(nodes: Iterable[dict[str, Any]]) -> list[NodeGpus]:
    """The nodes that offer GPUs or carry a product label, from Node objects as dicts."""
    offer = []
    for node in nodes:
        meta = node.get("metadata") or {}
        status = node.get("status") or {}
        amount = (status.get("allocatable") or status.get("capacity") or {}).get(GPU_RESOURCE, "0")
        count = int(parse_quantity(str(amount), "gpu"))
        product = (meta.get("labels") or {}).get(GPU_PRODUCT_LABEL) or NO_PRODUCT
        if count or product != NO_PRODUCT:
            offer.append(NodeGpus(meta.get("name", "?"), product, count))
    return offer


def describe_offer(offer: list[NodeGpus]) -> str:
    """`A100 (2 nodes, up to 8 GPUs each), T4 (1 node, 4 GPUs)`, or that there are none."""
    if not offer:
        return "no GPUs"
    by_product: dict[str, list[int]] = {}
    for entry in offer:
        by_product.setdefault(entry.product, []).append(entry.count)
    parts = []
    for product, counts in sorted(by_product.items()):
        nodes = f"{len(counts)} node{'s' if len(counts) > 1 else ''}"
        most = max(counts)
        each = f"up to {most} GPUs each" if len(set(counts)) > 1 else f"{most} GPU{'s' if most != 1 else ''}"
        parts.append(f"{product} ({nodes}, {each})")
    return ", ".join(parts)


def check_gpu_request(offer: list[NodeGpus], gpu: int, product: str | None) -> None:
    """Raise a UsageError when no node could ever run `gpu` GPUs of `product`, listing what exists."""
    if not gpu and not product:
        return
    fitting = [e for e in offer if (not product or e.product == product) and e.count >= gpu]
    if fitting:
        return
    what = f"{gpu} {GPU_RESOURCE}" if gpu else "GPUs"
    of = f" of product {product}" if product else ""
    raise UsageError(
        f"no node offers {what}{of}; " + (f"the nodes offer: {describe_offer(offer)}" if offer else "no node has GPUs"),
        hint="pick a listed product with --gpu-product, or ask for fewer GPUs with --gpu",
    )


def read_gpu_offer(client: Any) -> list[NodeGpus] | None:
    """The cluster's GPU nodes; None when nodes cannot be read (403), so nothing can be said."""
    from httpx2 import HTTPStatusError
    from lightkube.resources.core_v1 import Node

    from .queue import status_code

    try:
        nodes = [n.to_dict() for n in client.list(Node)]
    except HTTPStatusError as exc:
        if status_code(exc) in (401, 403):
            return None
        raise
    return node_gpus(nodes)
