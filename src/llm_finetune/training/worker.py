"""One rank of a launched training run: ``python -m llm_finetune.training.worker <launch folder>``.

Started by ``torchrun`` / ``accelerate launch`` (:mod:`llm_finetune.training.distributed`), never by
hand in a normal run. Every rank reads the same spec and payload and runs the in-process engine; the
Trainer sees the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and trains under
DDP (or FSDP / DeepSpeed from an accelerate config). Rank 0 logs into the driver's MLflow run and
writes the result the driver reads back.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
from pathlib import Path


def main(folder: Path) -> None:
    from llm_finetune.training.distributed import write_result
    from llm_finetune.training.engine import fit_in_process
    from llm_finetune.training.settings import TrainSettings

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads((folder / "spec.json").read_text())
    with open(folder / "payload.pkl", "rb") as handle:
        payload = pickle.load(handle)
    checkpoint_dir = Path(spec["checkpoint_dir"]) if spec["checkpoint_dir"] else None
    result = fit_in_process(payload["objective"], payload["train_rows"], payload["val_rows"],
                            TrainSettings(**spec["settings"]), checkpoint_dir, settings_key=spec["settings_key"],
                            mlflow_run=spec["mlflow"], clean_up=False)
    if rank == 0:
        trained = result.trained_state if result.trained_state is not None else {  # a world of one
            name: parameter for name, parameter in result.model.named_parameters() if parameter.requires_grad}
        write_result(folder, trained, result.history, result.info, result.logged_rows)
    _leave_process_group()


def _leave_process_group() -> None:
    """Free the Trainer's DDP reducer, then the process group (freed the other way round, gloo's destructor
    can deadlock on the GIL), after every rank is done."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
