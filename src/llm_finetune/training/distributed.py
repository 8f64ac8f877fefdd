"""Training in N processes while the Kedro ``train`` node stays the one driver.

Wrapping ``kedro run`` in ``torchrun`` would run the whole DAG N times. Instead, with
``train.distributed`` set, :func:`llm_finetune.training.engine.fit` calls :func:`launch`, which

1. writes a launch folder beside the checkpoints: ``spec.json`` (what a person reads: objective,
   resolved settings, world, base model, checkpoint folder, MLflow run, the command) and
   ``payload.pkl`` (the objective and the already tokenized rows: every cache was built by the
   driver's earlier nodes, so no rank tokenizes or converts a model);
2. starts the engine under the configured launcher, ``torchrun`` or ``accelerate launch`` (FSDP /
   DeepSpeed through an accelerate config file), as a subprocess whose output streams to this
   log; each rank runs :mod:`llm_finetune.training.worker`, i.e. the in-process engine, which the
   Trainer / accelerate turn into DDP (gloo on CPU, NCCL on GPUs) with batches sharded by rank;
3. reads back what rank 0 alone wrote, ``result/`` (trainable weights, history, ``train_info``),
   written aside and renamed so a crashed run never leaves a half result.

Rank 0 logs the step metrics into the driver's MLflow run (its id travels in the spec), so the
run holds one set of them. On several nodes the driver runs node 0 and logs the command each other
node runs (the launch folder must be on storage all nodes share, as ``data/`` is then).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
WORKER_MODULE = "llm_finetune.training.worker"
RESULT = "result"
WEIGHTS = "trainable.safetensors"


@dataclass
class LaunchedRun:
    """What rank 0 wrote: the trainable weights (``load_into`` a freshly built model), history and info."""

    folder: Path
    history: list[dict]
    info: dict
    logged_rows: list[dict]

    def load_into(self, model) -> None:
        """Copy the trained weights into ``model`` (built by the objective as the ranks built theirs)."""
        from safetensors.torch import load_file

        trained = load_file(str(self.folder / WEIGHTS))
        parameters = dict(model.named_parameters())
        missing = sorted(set(trained) - set(parameters))
        if missing:
            raise RuntimeError(f"{self.folder / WEIGHTS} holds weights the model lacks: {missing[:5]}")
        for name, tensor in trained.items():
            parameters[name].data.copy_(tensor.to(parameters[name].device, parameters[name].dtype))


def launch_folder(checkpoint_dir: Path | None) -> Path:
    """Beside the checkpoints (``<key>.launch``), so a multi-node run finds it on shared storage."""
    if checkpoint_dir is None:
        return Path(tempfile.mkdtemp(prefix="llm-finetune-launch-"))
    folder = Path(checkpoint_dir).with_name(Path(checkpoint_dir).name + ".launch")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def launch_command(distributed, folder: Path, node_rank: int | None = None) -> list[str]:
    """The launcher's command line for one node (``node_rank``: default the settings' own)."""
    node_rank = distributed.node_rank if node_rank is None else node_rank
    worker = ["-m", WORKER_MODULE, str(folder)]
    if distributed.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={distributed.processes}",
                f"--nnodes={distributed.nnodes}", f"--node-rank={node_rank}",
                f"--master-addr={distributed.master_addr}", f"--master-port={distributed.master_port}", *worker]
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if distributed.accelerate_config:
        command += ["--config_file", str(distributed.accelerate_config)]
    command += ["--num_processes", str(distributed.world_size), "--num_machines", str(distributed.nnodes),
                "--machine_rank", str(node_rank), "--main_process_ip", distributed.master_addr,
                "--main_process_port", str(distributed.master_port)]
    if not distributed.accelerate_config and distributed.world_size > 1:
        # accelerate's multi-process launcher (torch elastic underneath); on a CPU the Trainer then picks gloo.
        # Its --cpu flag would start one process without MPI.
        command += ["--multi_gpu"]
    return command + worker


def _mlflow_run() -> dict | None:
    import mlflow

    run = mlflow.active_run()
    return {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run.info.run_id} if run else None


def write_spec(folder: Path, objective, train_rows: list[dict], val_rows: list[dict], settings, checkpoint_dir,
               settings_key: str) -> dict:
    """``spec.json`` and ``payload.pkl`` in ``folder``; returns the spec."""
    spec = {"objective": f"{type(objective).__module__}.{type(objective).__qualname__}",
            "base_model": str(getattr(objective, "base_model", "")) or None, "settings_key": settings_key,
            "settings": settings.as_params(), "world_size": settings.distributed.world_size,
            "rows": {"train": len(train_rows), "val": len(val_rows)},
            "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None, "mlflow": _mlflow_run(),
            "commands": {rank: launch_command(settings.distributed, folder, rank)
                         for rank in range(settings.distributed.nnodes)}}
    with open(folder / "payload.pkl", "wb") as handle:
        pickle.dump({"objective": objective, "train_rows": train_rows, "val_rows": val_rows}, handle)
    (folder / "spec.json").write_text(json.dumps(spec, indent=2))
    return spec


def launch(objective, train_rows: list[dict], val_rows: list[dict], settings, checkpoint_dir: Path | None,
           settings_key: str) -> LaunchedRun:
    """Run the engine under the launcher and return what rank 0 wrote (see the module docstring)."""
    distributed = settings.distributed
    if distributed.node_rank != 0:
        raise ValueError(f"{settings_key}.distributed.node_rank is {distributed.node_rank}: the Kedro run is the "
                         "driver on node 0; other nodes run the command it logs")
    folder = launch_folder(checkpoint_dir)
    spec = write_spec(folder, objective, train_rows, val_rows, settings, checkpoint_dir, settings_key)
    for rank in range(1, distributed.nnodes):
        logger.warning("Node %d of %d must run now: %s", rank, distributed.nnodes, " ".join(spec["commands"][rank]))
    command = spec["commands"][0]
    logger.info("Training in %d processes (%s): %s", distributed.world_size, distributed.launcher, " ".join(command))
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    returncode = subprocess.run(command, env=env, check=False).returncode
    result = folder / RESULT
    if returncode != 0 or not (result / "info.json").is_file():
        raise RuntimeError(f"the {distributed.launcher} run failed (exit code {returncode}); its spec and any "
                           f"partial output are in {folder}")
    launched = LaunchedRun(result, *(json.loads((result / f"{name}.json").read_text())
                                     for name in ("history", "info", "logged_rows")))
    if checkpoint_dir and not settings.keep_checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return launched


def cleanup(launched: LaunchedRun) -> None:
    """Remove the launch folder once its weights are in the driver's model."""
    shutil.rmtree(launched.folder.parent, ignore_errors=True)


def write_result(folder: Path, trained_state: dict, history: list[dict], info: dict,
                 logged_rows: list[dict] = ()) -> None:
    """Rank 0: the trainable weights, history, info and the objective's logged rows into ``folder/result``,
    written aside and renamed."""
    from safetensors.torch import save_file

    scratch = folder / f"{RESULT}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in trained_state.items()},
              str(scratch / WEIGHTS))
    (scratch / "history.json").write_text(json.dumps(history))
    (scratch / "info.json").write_text(json.dumps(info, default=str))
    (scratch / "logged_rows.json").write_text(json.dumps(list(logged_rows), default=str))
    scratch.rename(folder / RESULT)
