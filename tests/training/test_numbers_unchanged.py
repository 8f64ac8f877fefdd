"""The numbers of every training stage, pinned: final losses, loss curves and weight bytes.

Each stage (``sft``, ``rm``, ``dpo``, ``pt``) runs ``kedro run --env test --to-nodes <train>``
on the tiny random Llama in a scratch project; the saved weights' sha256, the final train /
val losses and the per-step loss history are compared with ``golden_numbers.json``. They were
recorded before the one-engine redesign, so a refactoring that changes the maths fails here.

Weight bytes are compared where the CPU is the one the golden file was recorded on (fp32 GEMM
kernels differ between CPU families, so other machines may differ in the last bits); losses
are compared everywhere, within 1e-4. Record anew (after an intended, named change of the
maths) with ``LLM_FINETUNE_RECORD_GOLDEN=1 pytest tests/training/test_numbers_unchanged.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, REPO
from tests.pipelines.test_sft_e2e import kedro, scratch_project

pytestmark = pytest.mark.e2e
GOLDEN = Path(__file__).with_name("golden_numbers.json")
RECORD = os.environ.get("LLM_FINETUNE_RECORD_GOLDEN") == "1"
TRAIN_NODES = {"sft": "sft.train", "rm": "rm.train", "dpo": "dpo.train", "pt": "pt.train"}


ISA_LEVELS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # the widest one picks oneDNN's fp32 / bf16 kernels


def cpu_identity() -> str:
    """The CPU model name and its widest vector extension (fp32 kernels, hence the last bits of a run, follow
    both: two machines both named "AMD EPYC", one with AVX-512 BF16 and one with AVX2 only, differ)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return f"{name} ({next((level for level in ISA_LEVELS if level in flags), 'no avx2')})"


def preference_file(project: Path, stage: str) -> dict:
    """80 preference rows (the right answer against another row's) in ``project``; the params that use them."""
    raw = project / "data" / "01_raw"
    rows = json.loads(DEMO_DATA.read_text())[:80]
    pairs = [{"instruction": row["instruction"], "input": row["input"], "output": row["output"],
              "chosen": row["output"], "rejected": "No. " + rows[(i + 7) % len(rows)]["output"]}
             for i, row in enumerate(rows)]
    (raw / "prefs.json").write_text(json.dumps(pairs))
    return {"datasets.prefs.path": str(raw / "prefs.json"), "datasets.prefs.format": "alpaca",
            "datasets.prefs.ranking": "true", f"{stage}_data.datasets": "prefs", f"{stage}_data.split.mode": "ordered"}


def _stage_project(tmp_path_factory, stage: str) -> tuple[Path, dict]:
    root = scratch_project(tmp_path_factory, f"golden-{stage}")
    raw = root / "data" / "01_raw"
    if stage == "sft":
        shutil.copy(DEMO_DATA, raw)
        return root, {}
    if stage == "pt":
        lines = (REPO / "data" / "01_raw" / "demo_text.jsonl").read_text().splitlines()[:120]
        (raw / "demo_text.jsonl").write_text("\n".join(lines) + "\n")
        return root, {}
    return root, preference_file(root, stage)


def _single(project: Path, pattern: str) -> Path:
    found = sorted(project.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {project}, found {found}"
    return found[0]


def _numbers(project: Path) -> dict:
    """What the run produced: weight sha256, final losses and the loss history (train / val rows)."""
    weights = [p for p in project.glob("data/06_models/**/*.safetensors") if not {"base_model_cache", "base_model"} & set(p.parts)]
    assert len(weights) == 1, weights
    info = json.loads((weights[0].parent / "train_info.json").read_text())
    history = json.loads(_single(project, "data/07_model_output/**/loss_history.json/*/loss_history.json").read_text())
    return {"weights_sha256": hashlib.sha256(weights[0].read_bytes()).hexdigest(),
            "global_steps": info["global_steps"], "final_val_loss": info["final_val_loss"],
            "history": [[row["step"], row["split"], round(row["loss"], 6)] for row in history]}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


@pytest.mark.parametrize("stage", sorted(TRAIN_NODES))
def test_stage_numbers_are_unchanged(stage, tmp_path_factory, tiny_model_dir, golden):
    project, params = _stage_project(tmp_path_factory, stage)
    params["model_registry.tiny-llama.path"] = str(tiny_model_dir)
    result = kedro(project, "run", "--pipeline", stage, "--env", "test", "--to-nodes", TRAIN_NODES[stage],
                   params=params)
    assert result.returncode == 0, result.stdout[-4000:]
    numbers = _numbers(project)
    if RECORD:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
        golden["cpu"] = cpu_identity()
        golden[stage] = numbers
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
        return
    expected = golden[stage]
    assert numbers["global_steps"] == expected["global_steps"]
    assert [row[:2] for row in numbers["history"]] == [row[:2] for row in expected["history"]]
    for got, want in zip(numbers["history"], expected["history"]):
        assert got[2] == pytest.approx(want[2], abs=1e-4), (stage, got, want)
    assert numbers["final_val_loss"] == pytest.approx(expected["final_val_loss"], abs=1e-4)
    if golden.get("cpu") == cpu_identity():
        assert numbers["weights_sha256"] == expected["weights_sha256"], f"{stage}: weights differ on the same CPU"
