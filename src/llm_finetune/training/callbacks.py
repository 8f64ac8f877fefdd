"""What the engine reports while it trains: throughput and MFU, early stopping, MLflow steps, the loss history.

Every stage gets the same figures under the same names, because every stage runs the same
engine: ``train_loss`` / ``val_loss`` / ``learning_rate`` / ``grad_norm`` / ``tokens_per_s`` /
``mfu`` per logging step in MLflow, plus the objective's own metrics as ``train_<name>`` and
``val_<name>`` (DPO's ``rewards/accuracies``, the reward model's ``accuracy``, ...). Only the
main process logs, so a multi-process run logs each step once.

:class:`EarlyStopping` is an ``ExportableState``: its best loss and patience counter are saved in
every checkpoint and restored on resume, so a resumed run stops at the step an uninterrupted
one would.
"""

from __future__ import annotations

import json
import logging
import time
from numbers import Number
from pathlib import Path

import torch
from mlflow.entities import Metric, Param
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from llm_finetune.provenance import flat_leaves

logger = logging.getLogger(__name__)
STEP_METRICS = {"loss": "train_loss", "eval_loss": "val_loss", "learning_rate": "learning_rate",
                "grad_norm": "grad_norm", "tokens_per_s": "tokens_per_s", "mfu": "mfu"}


def peak_gemm_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.3, rounds: int = 3,
                    device: torch.device | str = "cpu") -> float:
    """Measured GEMM FLOP/s of one ``device`` (the CPU, or this process's GPU) in ``dtype``: the peak MFU
    is taken against, on the device the run trains on.

    The best of ``rounds`` timed rounds, so a moment of load from another process does not
    lower the peak (and inflate MFU). On a GPU the matrices are larger and each round is synchronised.
    """
    device = torch.device(device)
    if device.type == "cuda":
        size = max(size, 8192)
    a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b)
    synchronise()
    best = 0.0
    for _ in range(rounds):
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            torch.mm(a, b)
            runs += 1
        synchronise()
        best = max(best, 2 * size**3 * runs / (time.perf_counter() - started))
    return best


class Throughput(TrainerCallback):
    """Adds ``tokens_per_s`` and ``mfu`` (against the measured GEMM peak) to each training log."""

    def __init__(self, flops_per_token: float, peak_flops: float):
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.last = (time.perf_counter(), 0)
        self.mfus: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # evaluation logs: not a training interval
            return
        now = (time.perf_counter(), state.num_input_tokens_seen)
        if now[0] > self.last[0]:
            rate = (now[1] - self.last[1]) / (now[0] - self.last[0])
            logs["tokens_per_s"] = round(rate, 1)
            # the token count is over all ranks, the peak that of one device
            logs["mfu"] = round(rate * self.flops_per_token / (self.peak_flops * args.world_size), 4)
            self.mfus.append(logs["mfu"])
            if not state.is_world_process_zero:  # every rank measures, one reports
                self.last = now
                return
            remaining = (state.max_steps - state.global_step) * (now[0] - self.last[0]) / max(args.logging_steps, 1)
            logger.info("step %d/%d: loss %.4f, %.0f tokens/s, MFU %.1f%%, ETA %.0f s", state.global_step,
                        state.max_steps, logs["loss"], rate, 100 * logs["mfu"], remaining)
        self.last = now

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = (time.perf_counter(), state.num_input_tokens_seen)

    def mean_mfu(self) -> float | None:
        return round(sum(self.mfus) / len(self.mfus), 4) if self.mfus else None


class EarlyStopping(TrainerCallback, ExportableState):
    """Stop when val loss has not improved by ``min_delta`` for ``patience`` evaluations."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0, best: float = float("inf"), bad: int = 0):
        self.patience, self.min_delta, self.best, self.bad = patience, min_delta, best, bad

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                logger.info("Early stopping at step %d: val loss %.4f, best %.4f", state.global_step, loss, self.best)
                control.should_training_stop = True

    def state(self) -> dict:
        return {"args": {"patience": self.patience, "min_delta": self.min_delta},
                "attributes": {"best": self.best, "bad": self.bad}}


class MlflowSteps(TrainerCallback):
    """Per-step metrics into an MLflow run (main process only; see the module docstring).

    The run is the active one (kedro-mlflow's), or ``run_id`` on ``tracking_uri``: the driver's run,
    which rank 0 of a launched multi-process run logs into, so a run holds one set of step metrics
    however many processes trained. At the start it also logs the resolved settings (``settings``:
    ``{"rm.train": {...}}``) as flattened parameters (``rm.train.lora.r``), so runs compare on every
    setting, defaults included, not only on the keys a stage's YAML sets. Keys already logged are
    left as they are.
    """

    def __init__(self, metric_names: tuple[str, ...] = (), settings: dict | None = None, run_id: str | None = None,
                 tracking_uri: str | None = None):
        self.metric_names, self.settings = metric_names, settings or {}
        self.run_id, self.tracking_uri = run_id, tracking_uri

    def _target(self):
        """``(client, run id)`` to log into, or ``None`` when there is no run."""
        import mlflow

        run_id = self.run_id or (mlflow.active_run().info.run_id if mlflow.active_run() else None)
        return (mlflow.MlflowClient(self.tracking_uri), run_id) if run_id else None

    def on_train_begin(self, args, state, control, **kwargs):
        target = self._target() if state.is_world_process_zero and self.settings else None
        if target is None:
            return
        client, run_id = target
        logged = set(client.get_run(run_id).data.params)
        flat = {key: str(value) for key, value in flat_leaves(self.settings).items() if key not in logged}
        if flat:
            client.log_batch(run_id, params=[Param(key, value) for key, value in flat.items()])

    def on_log(self, args, state, control, logs=None, **kwargs):
        target = self._target() if state.is_world_process_zero and logs else None
        if target is None:
            return
        metrics = {name: float(logs[key]) for key, name in STEP_METRICS.items() if isinstance(logs.get(key), Number)}
        metrics |= {f"train_{name}": float(logs[name]) for name in self.metric_names if name in logs}
        metrics |= {f"val_{name}": float(logs[f"eval_{name}"]) for name in self.metric_names if f"eval_{name}" in logs}
        if metrics:
            client, run_id = target
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(key, value, now, state.global_step)
                                              for key, value in metrics.items()])


class LoggedRowsInCheckpoints(TrainerCallback):
    """Writes the objective's :meth:`~llm_finetune.training.objectives.Objective.logged_rows` into every
    checkpoint (``logged_rows.json``), so a resumed run returns the rows logged before the interruption too."""

    FILE = "logged_rows.json"

    def __init__(self, objective):
        self.objective = objective

    def on_save(self, args, state, control, **kwargs):
        rows = self.objective.logged_rows()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if rows and state.is_world_process_zero and folder.is_dir():
            (folder / self.FILE).write_text(json.dumps(rows, default=str))

    @classmethod
    def restore(cls, objective, checkpoint: str | Path) -> None:
        saved = Path(checkpoint) / cls.FILE
        if saved.is_file():
            objective.restore_logged_rows(json.loads(saved.read_text()))


def loss_history(log_history: list[dict], metric_names: tuple[str, ...] = ()) -> list[dict]:
    """Per-step train and val rows (loss, learning rate, the objective's metrics) from the Trainer's log."""
    rows = []
    for entry in log_history:
        if "loss" in entry:
            rows.append({"step": entry["step"], "split": "train", "loss": entry["loss"],
                         "learning_rate": entry.get("learning_rate")}
                        | {k: entry[k] for k in metric_names if k in entry})
        elif "eval_loss" in entry:
            rows.append({"step": entry["step"], "split": "val", "loss": entry["eval_loss"]}
                        | {k: entry[f"eval_{k}"] for k in metric_names if f"eval_{k}" in entry})
    return rows
