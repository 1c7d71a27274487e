"""Emulated Kubernetes API for tests (TEST-ONLY: the collection never imports this package).

The official ``kubernetes`` client talks to it over HTTP(S) as to a real API server; its NATS pods are
real local nats-server processes. See README.md in this directory.
"""

from __future__ import annotations

from ._auth import Rule, User
from ._cluster import ClusterSet, EmulatedCluster, merged_kubeconfig, start_clusters, stop_clusters
from ._exec import ExecResult
from ._pods import PodBackend
from ._server import V4_PROTOCOL, V5_PROTOCOL, ExecRecord, exec_status

__all__ = [
    "ClusterSet", "EmulatedCluster", "ExecRecord", "ExecResult", "PodBackend", "Rule", "User",
    "V4_PROTOCOL", "V5_PROTOCOL", "exec_status", "merged_kubeconfig", "start_clusters", "stop_clusters",
]
