"""The request log's series, served by `mlplat serve` on its own metrics port: what its spool
holds back while the lake is down, and the rows it dropped when the spool was full.

The serving process knows its spool; this module only turns the state it reports (a
`serving.requestlog.LogState`, read through its attributes) into the families of `series.SERVE`,
so the alerting rules and the service name the same metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from platform_assets.observability import series as S
from platform_assets.tenancy.isolation import PLATFORM


def _named(series: S.Series) -> tuple[str, str, None, tuple[str, ...]]:
    """A family's name, help, (no value) and labels, from the series table."""
    return series.name, series.help, None, series.labels


def _gauge(series: S.Series) -> GaugeMetricFamily:
    return GaugeMetricFamily(*_named(series))


class RequestLogCollector(Collector):
    """A scrape: the request log's state now. `models` are the (tenant, model) pairs the service
    serves, each shown from zero, so that the first drop is an increase Prometheus sees."""

    def __init__(
        self,
        state: Callable[[], Any],
        models: Iterable[tuple[str, str]],
        clock: Callable[[], float] = time.time,
    ):
        self.state = state
        self.models = sorted(models)
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        state = self.state()
        dropped = {m: 0 for m in self.models} | dict(state.dropped)
        spooled = {m: (0, 0) for m in self.models} | dict(state.spooled)
        batches, size = _gauge(S.SERVING_LOG_SPOOLED_BATCHES), _gauge(S.SERVING_LOG_SPOOLED_BYTES)
        for (tenant, model), (n, b) in sorted(spooled.items()):
            batches.add_metric([tenant, model], n)
            size.add_metric([tenant, model], b)
        limit, oldest = _gauge(S.SERVING_LOG_SPOOL_LIMIT), _gauge(S.SERVING_LOG_OLDEST_SPOOLED)
        limit.add_metric([PLATFORM], state.limit_bytes)
        age = self.clock() - state.oldest_spooled.timestamp() if state.oldest_spooled else 0.0
        oldest.add_metric([PLATFORM], max(age, 0.0))
        lost = CounterMetricFamily(*_named(S.SERVING_LOG_DROPPED))
        for (tenant, model), rows in sorted(dropped.items()):
            lost.add_metric([tenant, model], rows)
        return [lost, batches, size, limit, oldest]


def serve(
    state: Callable[[], Any], models: Iterable[tuple[str, str]], host: str, port: int
):  # -> (server, thread), as prometheus_client's start_http_server
    """Serve the request log's `/metrics` on host:port in a background thread."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestLogCollector(state, models))
    return start_http_server(port, addr=host, registry=registry)
