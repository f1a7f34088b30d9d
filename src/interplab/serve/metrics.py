"""Prometheus text-format metrics, written by hand (no client library needed).

Counters and the latency histogram are cumulative since start; the batch-size quantiles and
tokens/s describe the recent past (the engine keeps its last 256 decode steps; tokens/s is over
the last ``WINDOW`` seconds), which is what a dashboard of a live server wants.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

WINDOW = 10.0
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/analyses", "/health", "/metrics")


class Histogram:
    def __init__(self, buckets):
        self.buckets, self.counts, self.sum, self.count = tuple(buckets), [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{edge}"}} {n}' for edge, n in zip(self.buckets, self.counts)]
        return [*out, f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}",
                f"{name}_count {self.count}"]


def route_of(path: str) -> str:
    if path in ROUTES:
        return path
    return "/v1/analyses/{id}" if path.startswith("/v1/analyses/") else "other"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # (route, status) -> count
        self.latency = Histogram(LATENCY_BUCKETS)
        self.prompt_tokens = self.completion_tokens = 0
        self.recent: deque = deque()  # (finish time, new tokens)

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[(route_of(path), status)] += 1

    def finished(self, call) -> None:
        now = time.perf_counter()
        n = len(call.steps)
        with self._lock:
            self.latency.observe(now - call.started)
            self.prompt_tokens += call.prepared.prompt_len
            self.completion_tokens += n
            self.recent.append((now, n))

    def tokens_per_second(self) -> float:
        now = time.perf_counter()
        with self._lock:
            while self.recent and self.recent[0][0] < now - WINDOW:
                self.recent.popleft()
            return sum(n for _, n in self.recent) / WINDOW

    def render(self, engine) -> str:
        stats = engine.stats
        sizes = list(stats.batch_sizes)
        rate = self.tokens_per_second()
        lines = [
            "# HELP interplab_queue_depth Requests waiting to join the batch.",
            "# TYPE interplab_queue_depth gauge", f"interplab_queue_depth {stats.queue_depth}",
            "# HELP interplab_active_rows Requests in the running batch.",
            "# TYPE interplab_active_rows gauge", f"interplab_active_rows {stats.active}",
            "# HELP interplab_decode_steps_total Batched decode forwards run.",
            "# TYPE interplab_decode_steps_total counter", f"interplab_decode_steps_total {stats.steps}",
            "# HELP interplab_engine_tokens_total Tokens the engine generated (all requests).",
            "# TYPE interplab_engine_tokens_total counter", f"interplab_engine_tokens_total {stats.tokens}",
            "# HELP interplab_batch_size Rows per decode step over the last 256 steps.",
            "# TYPE interplab_batch_size gauge",
            *[f'interplab_batch_size{{quantile="{q}"}} {_quantile(sizes, q)}' for q in (0.5, 0.9, 0.99)],
            "# HELP interplab_tokens_per_second Completion tokens per second over the last 10 s.",
            "# TYPE interplab_tokens_per_second gauge", f"interplab_tokens_per_second {rate:.3f}",
        ]
        with self._lock:
            lines += ["# HELP interplab_requests_total HTTP requests by route and status.",
                      "# TYPE interplab_requests_total counter"]
            lines += [f'interplab_requests_total{{route="{r}",status="{s}"}} {n}'
                      for (r, s), n in sorted(self.requests.items())]
            lines += ["# HELP interplab_tokens_total Tokens of finished completions by kind.",
                      "# TYPE interplab_tokens_total counter",
                      f'interplab_tokens_total{{kind="prompt"}} {self.prompt_tokens}',
                      f'interplab_tokens_total{{kind="completion"}} {self.completion_tokens}',
                      "# HELP interplab_request_seconds Time from a completion request's arrival to its end.",
                      "# TYPE interplab_request_seconds histogram", *self.latency.lines("interplab_request_seconds")]
        return "\n".join(lines) + "\n"


class CountRequests:
    """ASGI middleware counting every response by route and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.request(scope["path"], message["status"])
            await send(message)

        await self.app(scope, receive, counted)
