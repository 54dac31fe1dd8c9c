"""What the server says about a load level: Triton's Prometheus metrics endpoint, read before and
after the level, as per-model differences. The client sees latency; only the server can say how
long each model of the ensemble queued and computed, and how many requests its batcher merged."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

from nlu_deploy.errors import NluDeployError

# Triton's per-model counters (cumulative since the server started), by the field they feed.
COUNTERS = {
    "requests": "nv_inference_request_success",
    "failures": "nv_inference_request_failure",
    "inferences": "nv_inference_count",  # requests, or rows for batched models
    "executions": "nv_inference_exec_count",  # model runs: inferences / executions is the real batch
    "request_us": "nv_inference_request_duration_us",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_input_us": "nv_inference_compute_input_duration_us",
    "compute_infer_us": "nv_inference_compute_infer_duration_us",
    "compute_output_us": "nv_inference_compute_output_duration_us",
}

Snapshot = dict[tuple[str, str], float]  # (counter, model) -> value


def scrape(metrics_url: str, timeout_s: float = 10.0) -> Snapshot:
    """The counters of every model, summed over its versions."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as error:
        raise NluDeployError(f"the server's metrics at {metrics_url} cannot be read ({error}).") from None
    wanted = set(COUNTERS.values())
    snapshot: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # the parser names counters' samples with a _total suffix only when the text has one
            name = sample.name.removesuffix("_total") if sample.name not in wanted else sample.name
            if name in wanted and "model" in sample.labels:
                key = (name, sample.labels["model"])
                snapshot[key] = snapshot.get(key, 0.0) + sample.value
    return snapshot


@dataclass(frozen=True)
class ModelWindow:
    """One model's counters over a load level."""

    requests: float
    failures: float
    inferences: float
    executions: float
    request_us: float
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float

    @property
    def average_batch(self) -> float | None:
        return self.inferences / self.executions if self.executions else None

    def per_request_ms(self, field: str) -> float | None:
        """A duration counter per successful request, in ms. Triton adds a batched execution's
        compute time to each of its requests, so compute per request is the time a request
        waited for its batch to run, not the model's cost divided by the batch."""
        return getattr(self, field) / self.requests / 1000 if self.requests else None

    def to_json(self) -> dict:
        compute = ("compute_input_us", "compute_infer_us", "compute_output_us")
        return {
            **asdict(self),
            "average_batch": self.average_batch,
            "queue_ms": self.per_request_ms("queue_us"),
            "compute_ms": (sum(getattr(self, f) for f in compute) / self.requests / 1000) if self.requests else None,
            "request_ms": self.per_request_ms("request_us"),
        }


def window(before: Snapshot, after: Snapshot, models: list[str]) -> dict[str, dict]:
    """Per model, what happened between two snapshots (a model missing from both: zeros)."""
    result = {}
    for model in models:
        values = {field: after.get((c, model), 0.0) - before.get((c, model), 0.0) for field, c in COUNTERS.items()}
        result[model] = ModelWindow(**values).to_json()
    return result
