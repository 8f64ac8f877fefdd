"""What a run's numbers depend on: package versions, the git commit, file digests, checkpoint keys.

One place for every identity a run records (MLflow tags, ``train_info.json``) or keys a cache
by (checkpoints, reference log-probs), so two stages never compute "the same run" differently.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

# the training parameters that do not change the numbers: a run interrupted and resumed with other
# values of these continues from the same checkpoints
BOOKKEEPING_KEYS = frozenset({"resume", "keep_checkpoints", "save_steps", "logging_steps"})


def package_versions() -> dict:
    """Versions of the packages that decide a run's numbers."""
    names = ("torch", "transformers", "peft", "accelerate", "kedro")
    return {"python": platform.python_version()} | {name: version(name) for name in names}


def git_commit() -> str | None:
    """The checked-out commit, or ``None`` outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def file_digest(folder: Path | None, names: tuple[str, ...]) -> str | None:
    """SHA-256 over the named files of ``folder`` (``None`` without a folder)."""
    if folder is None:
        return None
    digest = hashlib.sha256()
    for name in names:
        path = Path(folder) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()


def flat_leaves(data: dict, prefix: str = "") -> dict:
    """The leaves of a nested dict under ``a.b.c`` keys: how parameters and metrics are named in MLflow."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= flat_leaves(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def token_folder_key(folder: Path) -> str | None:
    """The cache key a tokenized folder was stored under (its ``stats.json``)."""
    return json.loads((Path(folder) / "stats.json").read_text()).get("cache_key")


def checkpoint_key(data: dict, base_model_info: dict, train_params: dict) -> str:
    """Which run a checkpoint belongs to: its data identities, base model and numeric parameters.

    ``data`` names what the stage trains on (cache keys of token folders, a reference key, ...);
    :data:`BOOKKEEPING_KEYS` are left out, so resuming with ``resume: true`` finds the same folder; of
    ``distributed`` only the world size counts (a run resumes under the world size it was checkpointed in).
    """
    params = {k: v for k, v in train_params.items() if k not in BOOKKEEPING_KEYS}
    for key, unset in (("distributed", None), ("trainer_args", {})):  # keys of runs without them stay as they were
        if params.get(key, unset) == unset:
            params.pop(key, None)
    if params.get("distributed"):  # the world size changes the numbers; where the processes meet does not
        params["distributed"] = {"world_size": params["distributed"]["processes"] * params["distributed"]["nnodes"]}
    identity = {**data, "base": base_model_info.get("fingerprint"), "params": params}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rows_digest(splits: list[list[dict]], keys: tuple[str, ...]) -> str:
    """SHA-256 over the ``keys`` fields of every row of ``splits`` (a split boundary counts)."""
    digest = hashlib.sha256()
    for rows in splits:
        for row in rows:
            digest.update(json.dumps([row[k] for k in keys]).encode())
        digest.update(b"|")
    return digest.hexdigest()


# query parameters that carry a secret in the URLs users paste (signed links, token-in-URL APIs)
SECRET_QUERY_KEYS = frozenset({"key", "api_key", "apikey", "token", "access_token", "sig", "signature", "password"})


def redact_url(url: str) -> str:
    """``url`` with any password / token in it replaced by ``***`` (userinfo and secret query values)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(params, where: str = "") -> list[str]:
    """Parameter keys whose value is a URL holding a secret (see :func:`redact_url`), with the redacted URL."""
    found = []
    if isinstance(params, dict):
        for key, value in params.items():
            found += url_secrets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(params, list):
        for index, value in enumerate(params):
            found += url_secrets(value, f"{where}[{index}]")
    elif isinstance(params, str) and "://" in params and redact_url(params) != params:
        found.append(f"{where} = {redact_url(params)}")
    return found
