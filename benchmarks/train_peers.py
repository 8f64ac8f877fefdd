"""The peers of ``train_vs_peers.py``: TRL's SFTTrainer, transformers' Trainer and the book's loop, each at its
defaults and at the best settings a user would try on a CPU, plus what every configuration shares (the
step meter and the val-loss function). Children of that script import it from its folder; the TRL
children run in TRL's own venv, so nothing here imports ``llm_finetune``.

Best settings, per peer (``--configs ... hf_bf16 trl_padding_free trl_packing book_bf16``):

* **HF Trainer, bf16**: ``bf16=True`` (autocast over fp32 weights) with length-grouped batches;
* **TRL padding-free, bf16**: ``padding_free=True`` (rows concatenated, boundaries from
  ``position_ids``, which transformers turns into a block-diagonal mask), no gradient checkpointing;
* **TRL packing, bf16**: ``packing=True`` (best-fit decreasing into ``max_length`` rows, padding-free),
  no gradient checkpointing, one packed row of 512 tokens per step (about the tokens of 8 padded rows;
  8 packed rows per step took 90 s a step and 12 GB here, their 4,096 tokens in one attention row);
* **book loop, bf16 autocast**: the same loop under ``torch.autocast("cpu", torch.bfloat16)``.
"""

from __future__ import annotations

import time

CUTOFF, BATCH, LR, SEED = 512, 8, 1e-3, 123
TRAINING_PEAK_MB: list[float] = []  # VmHWM when val_loss starts: the training's peak, before the fp32 evaluation
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}


def val_loss(model, rows: list[dict]) -> float:
    """Token-averaged cross-entropy on ``rows`` in fp32, right-padded batches of 8 (the same for everyone)."""
    import torch
    from bench_machine import memory_mb

    TRAINING_PEAK_MB.append(memory_mb())  # model.float() below copies a bf16 model to fp32: not training memory
    model = model.float().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in batch])
            labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
            mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100,
                                                       reduction="sum").item()
            count += int((target != -100).sum())
    return round(total / count, 4)


class Meter:
    """Per step: end time, trained tokens (labels != -100 after the shift) and padded input tokens."""

    def __init__(self):
        self.start, self.ends, self.trained, self.padded = time.perf_counter(), [], [], []

    def count(self, input_ids, labels) -> None:
        self.trained.append(int((labels[:, 1:] != -100).sum()))
        self.padded.append(int(input_ids.numel()))

    def step_done(self) -> None:
        self.ends.append(time.perf_counter())

    def hook(self, module, args, kwargs) -> None:
        """Forward pre-hook: count the batches of training forward passes (not evaluation)."""
        if module.training and kwargs.get("labels") is not None:
            self.count(kwargs["input_ids"], kwargs["labels"])

    def summary(self, warmup: int) -> dict:
        n = len(self.ends)
        seconds = self.ends[-1] - self.ends[warmup - 1]
        trained, padded = sum(self.trained[warmup:n]), sum(self.padded[warmup:n])
        return {"steps": n, "warmup_steps": warmup, "first_step_s": round(self.ends[0] - self.start, 2),
                "warmup_s": round(self.ends[warmup - 1] - self.start, 2), "timed_s": round(seconds, 2),
                "wall_s": round(self.ends[-1] - self.start, 2), "trained_tokens": trained,
                "padded_input_tokens": padded, "trained_tokens_per_s": round(trained / seconds, 1),
                "input_tokens_per_s": round(padded / seconds, 1), "s_per_step": round(seconds / (n - warmup), 3),
                "step_s": [round(b - a, 2) for a, b in zip([self.start] + self.ends, self.ends)],
                "step_trained_tokens": self.trained[:n], "step_input_tokens": self.padded[:n]}


def meter_callback(meter: Meter):
    """A transformers callback that hooks ``meter`` on the model and stamps every optimizer step."""
    from transformers import TrainerCallback

    class Stamp(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(meter.hook, with_kwargs=True)
            meter.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            meter.step_done()

    return Stamp()


def lora_model(folder: str):
    """The fp32 base model with peft LoRA adapters (the peers' model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    return get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype="float32"), LoraConfig(**LORA))


# SFTConfig overrides per TRL configuration; {} is TRL's own defaults
TRL_OPTIONS = {"trl_default": {}, "trl_fp32": {"bf16": False, "packing": False},
               # TRL refuses max_length with padding_free unless packing; our rows are cut at CUTOFF already
               "trl_padding_free": {"bf16": True, "padding_free": True, "gradient_checkpointing": False,
                                    "max_length": None},
               # one packed row of CUTOFF tokens per step holds about as many tokens as 8 padded rows; 8 packed rows
               # are one 4,096-token row with a block-diagonal mask (quadratic attention, 12 GB, 90 s a step here)
               "trl_packing": {"bf16": True, "packing": True, "gradient_checkpointing": False,
                               "per_device_train_batch_size": 1}}


def child_trl(data: dict, args, options: dict) -> dict:
    import datasets
    import trl
    from peft import LoraConfig

    settings = {"output_dir": args.work, "max_length": CUTOFF, "per_device_train_batch_size": BATCH,
                "learning_rate": LR, "lr_scheduler_type": "cosine", "warmup_steps": 10,
                "max_steps": -1 if args.epoch else args.steps, "num_train_epochs": 1,
                "seed": SEED, "report_to": "none", "save_strategy": "no", "eval_strategy": "no", "use_cpu": True,
                "disable_tqdm": True}
    config = trl.SFTConfig(**settings | options)
    meter, started = Meter(), time.perf_counter()
    trainer = trl.SFTTrainer(model=data["model"], args=config, train_dataset=datasets.Dataset.from_list(
        data["train_text"]), peft_config=LoraConfig(**LORA), callbacks=[meter_callback(meter)])
    setup = time.perf_counter() - started
    trainer.train()
    precision = "bf16 autocast" if config.bf16 else "fp32"
    precision += ", grad. ckpt." if config.gradient_checkpointing else ""
    return meter.summary(args.warmup) | {"precision": precision, "setup_s": round(setup, 2), "trl": trl.__version__,
                                         "packing": config.packing, "padding_free": config.padding_free,
                                         "gradient_checkpointing": config.gradient_checkpointing,
                                         "val_loss": val_loss(trainer.model, data["val"])}


def child_book(data: dict, args, bf16: bool = False) -> dict:
    """The book's ch. 7 loop (shuffled loader, drop_last, AdamW with weight decay 0.1, no schedule), with LoRA;
    ``bf16``: forward and loss under CPU bf16 autocast (the weights stay fp32)."""
    import torch

    torch.manual_seed(SEED)
    model = lora_model(data["model"])
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.1)
    rows, pad = data["train"], 0
    loader = torch.utils.data.DataLoader(rows, batch_size=BATCH, shuffle=True, drop_last=True, collate_fn=lambda b: b)
    meter, step = Meter(), 0
    while step < args.steps or (args.epoch and not step):  # --epoch: one pass over the loader
        for batch in loader:
            width = max(len(r["input_ids"]) for r in batch)
            input_ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch])
            labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
            meter.count(input_ids, labels)
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids).logits
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                                         ignore_index=-100)
            loss.backward()
            optimizer.step()
            meter.step_done()
            step += 1
            if step == args.steps:
                break
    precision = "bf16 autocast" if bf16 else "fp32"
    return meter.summary(args.warmup) | {"precision": precision, "val_loss": val_loss(model, data["val"])}


def child_hf_group(data: dict, args, bf16: bool = False, batch: int = BATCH) -> dict:
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(data["model"])
    training = TrainingArguments(output_dir=args.work, per_device_train_batch_size=batch, learning_rate=LR,
                                 lr_scheduler_type="cosine", warmup_steps=10, seed=SEED, num_train_epochs=1,
                                 max_steps=-1 if args.epoch else args.steps,
                                 train_sampling_strategy="group_by_length", report_to="none", save_strategy="no",
                                 eval_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=5, bf16=bf16)
    meter = Meter()
    trainer = Trainer(model=lora_model(data["model"]), args=training, train_dataset=data["train"],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
                      callbacks=[meter_callback(meter)])
    trainer.train()
    precision = "bf16 autocast" if bf16 else "fp32"
    return meter.summary(args.warmup) | {"precision": precision, "val_loss": val_loss(trainer.model, data["val"])}


RUNNERS = {"book": child_book, "book_bf16": lambda d, a: child_book(d, a, bf16=True),
           "hf_group": child_hf_group, "hf_bf16": lambda d, a: child_hf_group(d, a, bf16=True),
           "hf_bf16_batch16": lambda d, a: child_hf_group(d, a, bf16=True, batch=16)} | {
    name: (lambda d, a, o=options: child_trl(d, a, o)) for name, options in TRL_OPTIONS.items()}
