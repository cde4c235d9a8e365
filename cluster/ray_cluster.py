"""Joining a Ray cluster: the one at cluster.address / RAY_ADDRESS, or an embedded local one."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import ray

from cluster.job import ClusterConfig


def cluster_address(cfg: ClusterConfig) -> str | None:
    return cfg.address or os.environ.get("RAY_ADDRESS") or None


def connect(cfg: ClusterConfig) -> None:
    """ray.init against the configured cluster, failing fast (one line) when it cannot be reached."""
    address = cluster_address(cfg)
    if address not in (None, "auto"):
        _check_reachable(address, cfg.connect_timeout_s)
    if ray.is_initialized():
        return
    quiet = dict(log_to_driver=True, configure_logging=True, logging_level="WARNING")
    if address is None:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, **quiet)
        return
    ray.init(address=address, **quiet)


def _check_reachable(address: str, timeout_s: float) -> None:
    url = urlparse(address if "://" in address else f"tcp://{address}")
    if url.hostname is None or url.port is None:
        raise ConnectionError(f"RAY_ADDRESS '{address}' is not host:port (or 'auto')")
    try:
        with socket.create_connection((url.hostname, url.port), timeout=min(timeout_s, 10.0)):
            pass
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def node_ip() -> str:
    return ray.util.get_node_ip_address()
