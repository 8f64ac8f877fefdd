"""Scale-out settings checked before anything loads: train.distributed, trainer_args, qlora, fp16, devices."""

from __future__ import annotations

import sys

import pytest
import torch

from llm_finetune.models.loading import device
from llm_finetune.models.precision import resolve_precision
from llm_finetune.models.tuning import qlora_problems, quantization_config
from llm_finetune.training.distributed import WORKER_MODULE, launch, launch_command
from llm_finetune.training.engine import training_arguments
from llm_finetune.training.objectives import Objective
from llm_finetune.training.settings import DistributedSettings, train_settings


def test_trainer_args_pass_any_other_training_argument_through(tmp_path):
    settings = train_settings({"trainer_args": {"ddp_timeout": 600, "dataloader_pin_memory": False}})
    arguments = training_arguments(settings, "fp32", tmp_path, checkpointing=False)
    assert arguments.ddp_timeout == 600 and arguments.dataloader_pin_memory is False


def test_trainer_args_refuse_unknown_keys_and_keys_the_settings_own():
    with pytest.raises(ValueError) as error:
        train_settings({"trainer_args": {"ddp_timout": 600, "learning_rate": 1.0}}, "dpo.train")
    message = str(error.value)
    assert "dpo.train" in message
    assert "ddp_timout is not a TrainingArguments field; did you mean ddp_timeout?" in message
    assert "trainer_args.learning_rate is set by learning_rate" in message


def test_a_deepspeed_config_needs_deepspeed_on_this_machine():
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(ValueError, match="rm.train.trainer_args.deepspeed needs the deepspeed package"):
        train_settings({"trainer_args": {"deepspeed": "ds_z3.json"}}, "rm.train")


def test_distributed_settings_are_checked_and_count_the_world():
    assert DistributedSettings(processes=4, nnodes=2, node_rank=1).world_size == 8
    assert train_settings({"batch_size": 4, "distributed": {"processes": 2}}).global_batch_size == 8
    with pytest.raises(ValueError, match="node_rank 2 must be below nnodes 2"):
        train_settings({"distributed": {"nnodes": 2, "node_rank": 2}})
    with pytest.raises(ValueError, match="accelerate_config needs launcher: accelerate"):
        train_settings({"distributed": {"accelerate_config": "fsdp.yaml"}})
    with pytest.raises(ValueError, match="train.distributed.procesess: unknown key; did you mean processes"):
        train_settings({"distributed": {"procesess": 2}})


def test_launch_commands_are_the_launchers_own(tmp_path):
    torchrun = launch_command(DistributedSettings(processes=2, nnodes=2, master_addr="10.0.0.1"), tmp_path, 1)
    assert torchrun[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert {"--nproc-per-node=2", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1",
            "--master-port=29500"} <= set(torchrun)
    assert torchrun[-3:] == ["-m", WORKER_MODULE, str(tmp_path)]
    accelerate = launch_command(DistributedSettings(processes=2, nnodes=2, launcher="accelerate",
                                                    accelerate_config="fsdp.yaml"), tmp_path)
    assert accelerate[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    joined = " ".join(accelerate)
    assert "--config_file fsdp.yaml" in joined and "--num_processes 4" in joined and "--machine_rank 0" in joined
    plain = launch_command(DistributedSettings(launcher="accelerate"), tmp_path)
    assert "--multi_gpu" in plain and "--cpu" not in plain  # --cpu would start one process


class BrokenObjective(Objective):
    """Fails in every rank while building its model."""

    name = "broken"

    def build_model(self, settings, precision):
        raise RuntimeError("no model here")


def test_a_failed_launch_names_its_folder_and_keeps_the_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = train_settings({"precision": "fp32", "distributed": {"processes": 2, "master_port": 29533}})
    with pytest.raises(RuntimeError, match=r"torchrun run failed \(exit code [1-9]") as error:
        launch(BrokenObjective(), [{"x": 1}], [{"x": 2}], settings, tmp_path / "checkpoints" / "key", "train")
    folder = tmp_path / "checkpoints" / "key.launch"
    assert str(folder) in str(error.value) and (folder / "spec.json").is_file()


def test_qlora_fails_in_preflight_naming_what_this_machine_lacks():
    if not qlora_problems():
        pytest.skip("this machine has CUDA and bitsandbytes: qlora can run")
    with pytest.raises(ValueError) as error:
        train_settings({"method": "qlora"}, "train")
    message = str(error.value)
    assert "train.method qlora" in message and "Use train.method: lora" in message
    assert ("CUDA" in message) == (not torch.cuda.is_available())
    assert "bitsandbytes" in message


def test_qlora_quantizes_the_base_to_nf4_with_double_quantization():
    config = quantization_config("bf16")
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("fp16").bnb_4bit_compute_dtype == torch.float16


def test_fp16_is_for_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto") == "fp16"
    assert resolve_precision("fp16") == "fp16"


def test_each_rank_loads_onto_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert device() == torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device() == torch.device("cpu")


def test_flash_attention_combinations_it_cannot_run_fail_in_preflight():
    with pytest.raises(ValueError, match="computes in fp16 / bf16 only, and pt.train.precision is fp32"):
        train_settings({"attention": "flash_attention_2", "precision": "fp32"}, "pt.train")
    if torch.cuda.is_available():
        pytest.skip("CUDA is visible: the missing-hardware message is not produced here")
    with pytest.raises(ValueError, match="flash_attention_2 needs a CUDA device"):
        train_settings({"attention": "flash_attention_2", "precision": "bf16"})


def test_sft_and_pt_flatten_their_batches_for_flash_attention(tiny_model_dir):
    from llm_finetune.training.objectives.language_model import LanguageModelObjective

    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    flat = LanguageModelObjective(tiny_model_dir, flatten=True).collate(rows)
    assert flat["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and flat["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    padded = LanguageModelObjective(tiny_model_dir).collate(rows)
    assert padded["input_ids"].shape == (2, 3)
