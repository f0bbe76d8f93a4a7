"""Reading Prometheus text exposition (the API server's and the operator's ``/metrics``) without a
Prometheus: pick out samples by metric name, sum counters by label, difference two scrapes, and
estimate quantiles from histogram buckets the way PromQL's ``histogram_quantile`` does."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]

_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


def _unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _parse_value(raw: str) -> float:
    # Go writes +Inf/-Inf/NaN; float() accepts all three spellings.
    return float(raw)


def parse(text: str, names: Iterable[str]) -> list[Sample]:
    """Samples of the named metrics only (exact names, e.g. ``apiserver_request_total`` or
    ``foo_bucket``). Filtering on the name first keeps a multi-megabyte API server scrape cheap."""
    wanted = set(names)
    prefixes = tuple(wanted)
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(prefixes):
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            close = line.rfind("}")
            if close < brace:
                continue
            body, rest = line[brace + 1 : close], line[close + 1 :]
            labels = tuple(sorted((k, _unescape(v)) for k, v in _LABEL.findall(body)))
        else:
            name, _, rest = line.partition(" ")
            labels = ()
        if name not in wanted:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = _parse_value(fields[0])
        except ValueError:
            continue
        samples.append(Sample(name, labels, value))
    return samples


def has_metric(text: str, name: str) -> bool:
    """True when the scrape mentions the metric at all (a HELP/TYPE line or a sample)."""
    return any(line.startswith((name, f"# TYPE {name} ", f"# HELP {name} ")) for line in text.splitlines())


def sum_by(samples: Iterable[Sample], *keys: str) -> dict[tuple[str, ...], float]:
    """Like PromQL ``sum by (keys)``: label values (missing ones as "") -> summed value."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for sample in samples:
        labels = dict(sample.labels)
        out[tuple(labels.get(k, "") for k in keys)] += sample.value
    return dict(out)


def delta(
    after: Mapping[tuple[str, ...], float], before: Mapping[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    """Counter increase per key between two scrapes; a key whose counter went down (a restart) counts
    from zero, as PromQL's ``increase`` does."""
    out: dict[tuple[str, ...], float] = {}
    for key, value in after.items():
        previous = before.get(key, 0.0)
        out[key] = value - previous if value >= previous else value
    return out


def histogram_buckets(samples: Iterable[Sample]) -> list[tuple[float, float]]:
    """``*_bucket`` samples of one histogram, summed over every label but ``le``: sorted
    (upper bound, cumulative count) pairs."""
    by_le: dict[float, float] = defaultdict(float)
    for sample in samples:
        le = sample.label("le")
        if not le:
            continue
        by_le[float(le)] += sample.value
    return sorted(by_le.items())


def bucket_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(le, max(0.0, count - earlier.get(le, 0.0))) for le, count in after]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's estimate: find the bucket holding rank ``q * total`` and interpolate linearly inside
    it; the lowest bucket starts at 0, and a rank in the +Inf bucket gives the highest finite bound.
    None when there are no observations."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for index, (upper, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(upper):
                return buckets[index - 1][0] if index > 0 else None
            if index == 0 and upper <= 0:
                return upper
            in_bucket = count - lower_count
            if in_bucket <= 0:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = upper, count
    return None


def beyond_last_bucket(q: float, buckets: list[tuple[float, float]]) -> bool:
    """True when the ``q`` quantile lies above the highest finite bound, where
    :func:`histogram_quantile` can only answer that bound (the true value is larger)."""
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return False
    return q * buckets[-1][1] > buckets[-2][1]
