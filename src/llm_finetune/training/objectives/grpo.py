"""Group-relative policy optimisation (GRPO): the advantages and the clipped policy loss, as in TRL 1.16.

This module holds the maths the ``grpo`` stage trains with (issue 16); the online loop (sample
``num_generations`` completions per prompt, score them with the reward functions, several policy
updates per generation batch) is the stage's, on the shared engine. Definitions, as in TRL 1.16's
``GRPOTrainer`` (``tests/training/objectives/test_grpo_parity_trl.py`` pins them):

* advantages: a completion's reward minus the mean reward of its group (the completions of one
  prompt), divided by the group's standard deviation + 1e-4 (``scale_rewards: group``), by the whole
  batch's (``batch``), or not divided (``none``, Dr. GRPO's advice);
* per completion token, with ``ratio = exp(log π - log π_old)`` (``π_old``: the policy that sampled
  the completions; equal to π on the first update of a generation batch):
  ``-min(ratio · A, clip(ratio, 1 - ε_low, 1 + ε_high) · A)``, plus ``β · KL`` with the k3 estimate
  ``exp(log π_ref - log π) - (log π_ref - log π) - 1`` against the reference (the start model),
  multiplied by ``ratio`` when ``kl_bias_correction`` (TRL 1.16's default, after DeepSeek-V3.2: the KL
  gradient is then the unbiased reverse-KL gradient for completions sampled from ``π_old``);
* ``loss_type`` aggregates the token losses: ``grpo``, the mean over each completion's tokens, then
  over completions (short completions weigh more per token); ``bnpo``, the mean over all completion
  tokens of the batch; ``dr_grpo``, the sum divided by completions x ``max_completion_length`` (no
  length bias);
* log-probs are of the completion tokens under logits divided by the sampling ``temperature``,
  through the shared trained-positions path (:func:`llm_finetune.training.numerics.sequence_logps`'s
  gather), so the LM head runs on the completion tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llm_finetune.models.precision import compute_context
from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.training.compile import eager
from llm_finetune.training.numerics import trained_logits
from llm_finetune.training.objectives import Objective

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")
PROMPT_ROWS = ("verifiable", "all")  # grpo.rows: the prompts a reference can check, or every prompt


@dataclass(frozen=True)
class GrpoSettings:
    """``grpo.loss_type``, ``beta`` (KL weight; 0: no reference pass), ``epsilon_low`` / ``epsilon_high`` (the
    clip range; ``epsilon_high`` defaults to ``epsilon_low``), ``scale_rewards``, ``num_generations`` (completions
    per prompt), ``max_completion_length``, the sampling ``temperature``, ``kl_bias_correction`` and
    ``num_iterations`` (policy updates per generation batch), checked."""

    loss_type: str = "grpo"
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    scale_rewards: str = "group"
    num_generations: int = 8
    max_completion_length: int = 256
    temperature: float = 1.0
    kl_bias_correction: bool = True
    num_iterations: int = 1

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"grpo.loss_type {self.loss_type!r} is not one of {LOSS_TYPES}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"grpo.scale_rewards {self.scale_rewards!r} is not one of {SCALE_REWARDS}")
        if self.beta < 0 or not 0 < self.epsilon_low < 1 or (self.epsilon_high is not None and self.epsilon_high <= 0):
            raise ValueError("grpo.beta must be >= 0, grpo.epsilon_low in (0, 1) and grpo.epsilon_high > 0")
        if self.num_generations < 2:
            raise ValueError("grpo.num_generations must be at least 2: advantages compare completions of a prompt")
        if self.max_completion_length < 1 or not self.temperature > 0:
            raise ValueError("grpo.max_completion_length must be >= 1 and grpo.temperature > 0")
        if self.num_iterations < 1:
            raise ValueError("grpo.num_iterations must be at least 1 (policy updates per generation batch)")

    @property
    def clip_range(self) -> tuple[float, float]:
        return 1 - self.epsilon_low, 1 + (self.epsilon_low if self.epsilon_high is None else self.epsilon_high)


def settings_from_params(params: dict) -> GrpoSettings:
    """:class:`GrpoSettings` from the ``grpo`` block (its other keys: ``train``, ``rewards``, ``rows``, ``eval``)."""
    names = set(GrpoSettings.__dataclass_fields__)
    return GrpoSettings(**{k: v for k, v in params.items() if k in names})


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """Advantages of ``rewards`` (one per completion, the completions of a prompt consecutive)."""
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    groups = rewards.float().view(-1, group_size)
    centred = (groups - groups.mean(dim=1, keepdim=True)).flatten()
    if scale == "none":
        return centred
    spread = groups.std(dim=1).repeat_interleave(group_size) if scale == "group" else rewards.float().std().expand(
        len(rewards))
    return centred / (spread + 1e-4)


def completion_logps(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                     completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``(B, T)`` log-probs of each completion token after its prompt (0 where ``completion_mask`` is 0)."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX),
                        completion_ids.masked_fill(completion_mask == 0, IGNORE_INDEX)], dim=1)
    trained = labels[:, 1:] != IGNORE_INDEX
    logits = trained_logits(model, {"input_ids": input_ids, "attention_mask": attention_mask}, trained)
    token_logps = -F.cross_entropy(logits / temperature, labels[:, 1:][trained], reduction="none")
    grid = torch.zeros(trained.shape, dtype=token_logps.dtype, device=token_logps.device)
    grid[trained] = token_logps
    return grid[:, -completion_ids.size(1):]


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, settings: GrpoSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The batch loss (see the module docstring) and per-completion metrics: ``kl``, ``clip_ratio``
    (share of tokens where the clipped term was taken), ``completion_length``."""
    mask = mask.to(logps.dtype)
    advantages = advantages.to(logps.dtype).unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    low, high = settings.clip_range
    clipped = torch.clamp(ratio, low, high)
    token_losses = -torch.min(ratio * advantages, clipped * advantages)
    tokens = mask.sum(dim=1).clamp(min=1)
    metrics = {"completion_length": mask.sum(dim=1).detach(),
               "clip_ratio": (((ratio * advantages > clipped * advantages).to(mask.dtype) * mask).sum(1) / tokens)
               .detach()}
    if settings.beta:
        if ref_logps is None:
            raise ValueError("grpo.beta > 0 needs the reference log-probs")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        token_losses = token_losses + settings.beta * (kl * ratio if settings.kl_bias_correction else kl)
        metrics["kl"] = ((kl * mask).sum(1) / tokens).detach()
    if settings.loss_type == "grpo":
        loss = ((token_losses * mask).sum(dim=1) / tokens).mean()
    elif settings.loss_type == "bnpo":
        loss = (token_losses * mask).sum() / mask.sum().clamp(min=1)
    else:
        loss = (token_losses * mask).sum() / (len(logps) * settings.max_completion_length)
    return loss, metrics


class GrpoObjective(Objective):
    """GRPO with LoRA on prompt rows (``prompt_ids`` plus the judges' ``prompt_input`` / ``reference`` / ``meta``).

    A generation batch: :meth:`prepare` samples ``num_generations`` completions per prompt with the current
    policy (seeded by the step, so a rerun samples the same), scores them with ``score`` (a
    :class:`llm_finetune.evaluation.rewards.RewardSet`'s ``score``, passed in by the pipeline) and turns the
    totals into group advantages. The engine trains each step's prompts ``num_iterations`` steps in a row
    (:attr:`batch_repeats`); the first update's ``π_old`` is the policy itself (ratio 1), later ones read the
    sampling policy's log-probs kept from the generation, so the clip bounds how far they move. :meth:`loss` is
    the clipped objective with the KL to the start model (the LoRA disabled) when ``beta > 0``. The first
    ``log_prompts`` groups of each ``log_every`` steps are kept (:meth:`logged_rows`): what users read.
    """

    name = "grpo"

    def __init__(self, base_model, start_adapter, settings: GrpoSettings, score, pad_token_id: int,
                 end_ids: list[int], reward_names: tuple[str, ...], seed: int = 123, log_every: int = 10,
                 log_prompts: int = 2):
        self.base_model, self.start_adapter, self.settings = base_model, start_adapter, settings
        self.score, self.pad_token_id, self.end_ids, self.seed = score, pad_token_id, list(end_ids), seed
        self.log_every, self.log_prompts, self.batch_repeats = log_every, log_prompts, settings.num_iterations
        self.metric_names = ("reward", "reward_std", "completion_length", "clip_ratio",
                             *(("kl",) if settings.beta else ()), *(f"rewards/{name}" for name in reward_names),
                             *(f"failed/{name}" for name in reward_names))
        self.tokenizer, self.precision = None, "fp32"
        self._generations: dict[tuple, list] = {}  # prompts -> [prepared batch, updates left]
        self._logged: list[dict] = []

    def build_model(self, settings, precision: str):
        from llm_finetune.models.loading import load_tokenizer
        from llm_finetune.training.objectives.dpo import build_policy

        self.tokenizer, self.precision = load_tokenizer(self.base_model), precision
        model = build_policy(self.base_model, self.start_adapter, settings.lora.model_dump(), precision)
        return (model, sum(p.numel() for p in model.parameters() if p.requires_grad),
                sum(p.numel() for p in model.parameters()))

    def row(self, row: dict) -> dict:
        return {k: row[k] for k in ("prompt_ids", "prompt_input", "reference", "meta") if k in row}

    def length(self, row: dict) -> int:
        return len(row["prompt_ids"])

    def longest_sequence(self, rows: list[dict]) -> int:
        """A prompt and the longest completion it may be given."""
        return super().longest_sequence(rows) + self.settings.max_completion_length

    def collate(self, rows: list[dict]) -> dict:
        """The prompt rows as they are (completions are sampled in :meth:`prepare`) and their padded ids, which
        the Trainer counts as the tokens seen."""
        width = max(len(row["prompt_ids"]) for row in rows)
        ids = [[self.pad_token_id] * (width - len(row["prompt_ids"])) + list(row["prompt_ids"]) for row in rows]
        return {"rows": rows, "input_ids": torch.tensor(ids)}

    def prepare(self, model, batch: dict, step: int) -> dict:
        """A generation batch for new prompts; the same one again for the later updates on them."""
        if not model.training:
            return self._generate(model, batch["rows"], self.seed + step + 10**6)
        key = tuple(tuple(row["prompt_ids"]) for row in batch["rows"])
        if key not in self._generations:
            generated = self._generate(model, batch["rows"], self.seed + step)
            if self.settings.num_iterations > 1:  # the sampling policy's log-probs, for the later updates
                with torch.no_grad(), compute_context(model, self.precision):
                    generated["old_logps"] = completion_logps(model, *self._completion_inputs(generated),
                                                              temperature=self.settings.temperature)
            self._log(step, batch["rows"], generated)
            self._generations[key] = [generated, self.settings.num_iterations]
        entry = self._generations[key]
        entry[1] -= 1
        first = entry[1] == self.settings.num_iterations - 1
        if not entry[1]:
            del self._generations[key]
        return entry[0] | {"first_update": first}

    def _generate(self, model, prompt_rows: list[dict], seed: int) -> dict:
        from llm_finetune.evaluation.generation import Decoding, completion_texts, generate_token_ids

        settings, group = self.settings, self.settings.num_generations
        rows = [row for row in prompt_rows for _ in range(group)]
        decoding = Decoding(max_new_tokens=settings.max_completion_length, do_sample=True,
                            temperature=settings.temperature, seed=seed)
        prompts = [list(row["prompt_ids"]) for row in rows]
        with compute_context(model, self.precision), eager():  # train.compile: sampling runs eager (KV-cache steps)
            completions, _ = generate_token_ids(model, self.tokenizer, prompts, len(prompts), decoding, self.end_ids,
                                                progress=False)
        texts = completion_texts(self.tokenizer, completions, self.end_ids)
        scored = self.score(texts, [{k: r.get(k) for k in ("prompt_input", "reference", "meta")} for r in rows])
        total = torch.tensor(scored["total"], dtype=torch.float32)
        width, length = max(len(p) for p in prompts), max(max(len(c) for c in completions), 1)
        device = next(model.parameters()).device

        def padded(values: list[list[int]], left: bool, fill: int) -> torch.Tensor:
            size = width if left else length
            return torch.tensor([[fill] * (size - len(v)) + v if left else v + [fill] * (size - len(v))
                                 for v in values], device=device)

        return {"prompt_ids": padded(prompts, True, self.pad_token_id),
                "prompt_mask": padded([[1] * len(p) for p in prompts], True, 0),
                "completion_ids": padded(completions, False, self.pad_token_id),
                "completion_mask": padded([[1] * len(c) for c in completions], False, 0),
                "rewards": total, "advantages": group_advantages(total, group, settings.scale_rewards).to(device),
                "by_reward": scored["by_reward"], "failed": scored["failed"], "texts": texts}

    @staticmethod
    def _completion_inputs(batch: dict) -> tuple:
        return tuple(batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"))

    def _log(self, step: int, prompt_rows: list[dict], generated: dict) -> None:
        """Keep the first ``log_prompts`` groups of the first generation in each window of ``log_every`` steps."""
        window = step // max(self.log_every, 1)
        if self._logged and self._logged[-1]["window"] == window:
            return
        group = self.settings.num_generations
        for index in range(min(self.log_prompts, len(prompt_rows)) * group):
            row = prompt_rows[index // group]
            self._logged.append({
                "window": window, "step": step + 1, "prompt": row.get("prompt_input"),
                "reference": row.get("reference"),
                "completion": generated["texts"][index], "reward": round(float(generated["rewards"][index]), 6),
                "advantage": round(float(generated["advantages"][index]), 6),
                "completion_tokens": int(generated["completion_mask"][index].sum()),
                **{f"rewards/{name}": values[index] for name, values in generated["by_reward"].items()}})

    def logged_rows(self) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "window"} for row in self._logged]

    def restore_logged_rows(self, rows: list[dict]) -> None:
        self._logged = [row | {"window": (row["step"] - 1) // max(self.log_every, 1)} for row in rows]

    def loss(self, model, batch: dict, num_items_in_batch=None):
        inputs = self._completion_inputs(batch)
        temperature = self.settings.temperature
        logps = completion_logps(model, *inputs, temperature=temperature)
        old_logps = logps.detach() if batch.get("first_update", True) else batch["old_logps"]
        reference = None
        if self.settings.beta:
            with torch.no_grad(), compute_context(model, self.precision, autocast=False, reference=True):
                reference = completion_logps(model, *inputs, temperature=temperature)
        loss, metrics = grpo_loss(logps, old_logps, reference, batch["advantages"], batch["completion_mask"],
                                  self.settings)
        groups = batch["rewards"].view(-1, self.settings.num_generations)
        metrics |= {"reward": batch["rewards"], "reward_std": groups.std(dim=1).repeat_interleave(groups.size(1))}
        metrics |= {f"rewards/{name}": torch.tensor(values) for name, values in batch["by_reward"].items()}
        metrics |= {f"failed/{name}": torch.tensor([float(count)]) for name, count in batch["failed"].items()}
        return loss, metrics

    def flops_per_token(self, total_parameters: int, settings) -> float:
        """Per prompt token; sampling the completions is not counted (MFU here is the update's)."""
        return 4 * total_parameters

    def summary(self, history: list[dict], train_rows: list[dict]) -> dict:
        train = [row for row in history if row["split"] == "train"]
        return {"loss_type": self.settings.loss_type, "beta": self.settings.beta,
                "num_generations": self.settings.num_generations, "num_iterations": self.settings.num_iterations,
                "prompts": len(train_rows), "first_train_reward": train[0].get("reward") if train else None,
                "final_train_reward": train[-1].get("reward") if train else None}
