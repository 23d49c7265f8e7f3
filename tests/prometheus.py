"""/metrics read the way Prometheus reads it: through prometheus_client's own exposition parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str) -> Samples:
    """Every sample of `url`/metrics."""
    return parse(httpx.get(url + "/metrics", timeout=30).text)


def sample(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if there is none)."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls) in samples if n == name and label in dict(ls)}


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples called `name` summed per value of `label`: e.g. rejected_total by reason."""
    return {value: sample(samples, name, **{label: value}) for value in sorted(label_values(samples, name, label))}
