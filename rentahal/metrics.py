"""Prometheus metrics, labelled by realm (SPEC §12, §14). One registry per broker process.

Histograms, not lists: the seed kept every processing time in memory for its averages.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queries = Counter(
            "rentahal_queries",
            "Queries finished, by realm, type and outcome (done, failed, cancelled, expired).",
            ["realm", "query_type", "outcome"],
            registry=self.registry,
        )
        self.processing = Histogram(
            "rentahal_query_processing_seconds",
            "Worker processing time of successful queries.",
            ["realm", "query_type", "worker"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "rentahal_queue_wait_seconds",
            "Time from acceptance to dispatch.",
            ["realm"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "rentahal_queue_depth", "Jobs waiting, by realm.", ["realm"], registry=self.registry
        )
        self.retries = Counter(
            "rentahal_retries",
            "Jobs sent back to the queue after a worker failed.",
            ["realm"],
            registry=self.registry,
        )
        self.cross_realm = Counter(
            "rentahal_cross_realm_requests",
            "Jobs served by a backup realm's worker.",
            ["realm", "served_by"],
            registry=self.registry,
        )
        self.worker_health = Gauge(
            "rentahal_worker_health", "Health score 0-100.", ["worker"], registry=self.registry
        )
        self.worker_in_flight = Gauge(
            "rentahal_worker_in_flight",
            "Jobs running on the worker.",
            ["worker"],
            registry=self.registry,
        )
        self.connected_users = Gauge(
            "rentahal_connected_users",
            "Users with an open bus connection.",
            registry=self.registry,
        )
        self.cost = Counter(
            "rentahal_cost",
            "Cost charged for finished queries.",
            ["realm"],
            registry=self.registry,
        )
