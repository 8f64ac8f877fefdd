"""Check the parameters a run is given (``--params``, ``kedro run --config <experiment file>``) against the
project's own, so a misspelt key fails before anything runs, naming the key and the nearest known one.

Kedro merges runtime parameters into the configuration without looking: ``train.lerning_rate=1e-3``
would silently add a key no node reads, and the run would train at the default rate. The check walks
the runtime tree beside the configured one (``conf/base`` + the run's environment, without the
runtime values) and reports a key wherever the configuration has a mapping at that place that lacks
it. Left open on purpose:

* registries, where a new entry is the point: ``model_registry``, ``datasets``; and ``eval.responses``,
  a data source like a registry entry's (``path`` | ``url`` + ``sha256`` | ``hub``, ``file_type``,
  ``max_rows``, ...), of which ``conf/base`` sets only the path;
* training blocks (``train``, ``rm.train``, ...): they are checked field by field, with the same
  nearest-key message, by :func:`llm_finetune.training.settings.train_settings` in each stage's
  preflight (the YAML holds only what differs from the defaults, so it cannot list every key);
* a place where the configuration holds a value or ``null`` (``judge.llm: null`` takes a mapping).

:mod:`difflib` gives the nearest key; no library validates free-form Kedro parameter trees.
"""

from __future__ import annotations

import difflib

OPEN_MAPS = ("model_registry", "datasets", "eval.responses")
SETTINGS_BLOCK = "train"


def unknown_keys(runtime: dict, configured: dict, prefix: str = "") -> list[str]:
    """One message per runtime key the configuration does not know (see the module docstring)."""
    problems = []
    for key, value in runtime.items():
        path = f"{prefix}{key}"
        if path in OPEN_MAPS or key == SETTINGS_BLOCK:
            continue
        if key not in configured:
            nearest = difflib.get_close_matches(str(key), [str(k) for k in configured], n=1, cutoff=0.6)
            hint = f"; did you mean {prefix}{nearest[0]}?" if nearest else ""
            problems.append(f"{path}: unknown parameter{hint}")
        elif isinstance(value, dict) and isinstance(configured[key], dict):
            problems += unknown_keys(value, configured[key], f"{path}.")
    return problems


def check_runtime_params(config_loader) -> None:
    """Raise ``ValueError`` listing every unknown runtime parameter of the run ``config_loader`` serves."""
    runtime = dict(config_loader.runtime_params or {})
    if not runtime:
        return
    plain = type(config_loader)(conf_source=config_loader.conf_source, env=config_loader.env,
                                base_env=config_loader.base_env, default_run_env=config_loader.default_run_env,
                                config_patterns=config_loader.config_patterns,
                                merge_strategy=config_loader.merge_strategy)
    problems = unknown_keys(runtime, plain["parameters"])
    if problems:
        raise ValueError("Unknown parameters given to the run (from --params or a --config experiment file): "
                         + "; ".join(problems) + ". Nothing was run.")
