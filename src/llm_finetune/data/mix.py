"""Mix several aligned datasets into one: concatenate, or interleave with probabilities.

``interleave`` draws the next record's dataset with the given probabilities from a seeded
generator (the same seed gives the same order) and stops when the first dataset runs out
(``first_exhausted``, LLaMA-Factory's ``interleave_under``) or when every dataset has been
used up, restarting the exhausted ones (``all_exhausted``, its ``interleave_over``). This is
``datasets.interleave_datasets``'s rule on plain records: going through Arrow would force one
schema on the free-form ``meta`` of different sources.
"""

from __future__ import annotations

import random

STRATEGIES = ("concat", "interleave")
STOPPING = ("first_exhausted", "all_exhausted")


def mix_datasets(aligned: dict[str, list[dict]], strategy: str = "concat", probabilities: list[float] | None = None,
                 seed: int = 0, stopping: str = "first_exhausted") -> list[dict]:
    """One list of records from ``aligned`` (dataset name -> records, in selection order)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"data.mix.strategy {strategy!r} is not one of {STRATEGIES}")
    names = list(aligned)
    if strategy == "concat" or len(names) == 1:
        return [record for name in names for record in aligned[name]]
    if stopping not in STOPPING:
        raise ValueError(f"data.mix.stopping {stopping!r} is not one of {STOPPING}")
    weights = check_probabilities(probabilities, len(names))
    rng = random.Random(seed)
    position = dict.fromkeys(names, 0)
    exhausted: set[str] = set()
    mixed = []
    while True:
        name = rng.choices(names, weights)[0]
        if position[name] == len(aligned[name]):
            exhausted.add(name)
            if stopping == "first_exhausted" or len(exhausted) == sum(w > 0 for w in weights):
                return mixed
            position[name] = 0
        mixed.append(aligned[name][position[name]])
        position[name] += 1


def check_probabilities(probabilities: list[float] | None, n_datasets: int) -> list[float]:
    """Equal weights by default; otherwise one non-negative weight per dataset, summing to 1."""
    if probabilities is None:
        return [1.0 / n_datasets] * n_datasets
    if len(probabilities) != n_datasets or any(p < 0 for p in probabilities) or abs(sum(probabilities) - 1) > 1e-6:
        raise ValueError(f"data.mix.probabilities must be {n_datasets} non-negative numbers summing to 1, "
                         f"got {probabilities}")
    return list(probabilities)
