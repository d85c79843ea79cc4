from __future__ import annotations

import pytest

from pypod.errors import UsageError
from pypod.kube.gpus import check_gpu_request, describe_offer, node_gpus


def node(name: str, gpus: str | None = None, product: str | None = None) -> dict:
    labels = {"kubernetes.io/hostname": name, **({"nvidia.com/gpu.product": product} if product else {})}
    allocatable = {"cpu": "8", **({"nvidia.com/gpu": gpus} if gpus else {})}
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": allocatable}}


NODES = [
    node("cpu-1"),
    node("a100-1", "4", "NVIDIA-A100-SXM4-80GB"),
    node("a100-2", "8", "NVIDIA-A100-SXM4-80GB"),
    node("h100-1", "2", "NVIDIA-H100-80GB-HBM3"),
]


def test_the_offer_lists_products_with_node_and_gpu_counts():
    offer = node_gpus(NODES)
    assert [e.node for e in offer] == ["a100-1", "a100-2", "h100-1"]
    assert describe_offer(offer) == (
        "NVIDIA-A100-SXM4-80GB (2 nodes, up to 8 GPUs each), NVIDIA-H100-80GB-HBM3 (1 node, 2 GPUs)"
    )
    assert describe_offer([]) == "no GPUs"


def test_a_request_that_fits_some_node_passes():
    offer = node_gpus(NODES)
    check_gpu_request(offer, 8, "NVIDIA-A100-SXM4-80GB")
    check_gpu_request(offer, 2, None)
    check_gpu_request(offer, 0, None)
    check_gpu_request([], 0, None)


def test_an_absent_product_or_too_many_gpus_fails_listing_what_exists():
    offer = node_gpus(NODES)
    with pytest.raises(UsageError) as err:
        check_gpu_request(offer, 1, "Tesla-T4")
    assert err.value.message.startswith("no node offers 1 nvidia.com/gpu of product Tesla-T4; the nodes offer: ")
    assert "NVIDIA-H100-80GB-HBM3 (1 node, 2 GPUs)" in err.value.message
    with pytest.raises(UsageError, match=r"no node offers 4 nvidia\.com/gpu of product NVIDIA-H100-80GB-HBM3"):
        check_gpu_request(offer, 4, "NVIDIA-H100-80GB-HBM3")
    with pytest.raises(UsageError, match=r"no node offers 1 nvidia\.com/gpu; no node has GPUs"):
        check_gpu_request(node_gpus([node("cpu")]), 1, None)
