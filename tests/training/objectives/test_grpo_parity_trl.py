"""GRPO's loss against TRL 1.16's ``GRPOTrainer``, on a tiny model with fixed completions, rewards and log-probs.

The same prompts and completions (right-padded, some shorter than the longest), the same old-policy and
reference log-probs (the model's own, shifted so the ratio clips on some tokens and the KL is not zero)
and the same advantages go through TRL's ``_compute_loss`` and through ours
(:func:`llm_finetune.training.objectives.grpo.grpo_loss` on :func:`completion_logps`); the losses agree
within 1e-4 for each ``loss_type`` we ship, with and without the KL term (and its bias correction), and
the gradients' norms within 1e-5 relative.
"""

from __future__ import annotations

import pytest
import torch

from llm_finetune.training.objectives.grpo import GrpoSettings, completion_logps, group_advantages, grpo_loss

trl = pytest.importorskip("trl")

PROMPT_LENGTH, COMPLETION_LENGTH, GENERATIONS = 6, 9, 4
REWARDS = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.2, 0.9, 0.9, 0.1])  # two prompts x four completions


def _batch(vocab: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(5, vocab, (2, PROMPT_LENGTH), generator=generator).repeat_interleave(GENERATIONS, dim=0)
    completion = torch.randint(5, vocab, (len(prompt), COMPLETION_LENGTH), generator=generator)
    lengths = torch.tensor([9, 4, 7, 9, 2, 9, 5, 8])
    mask = (torch.arange(COMPLETION_LENGTH) < lengths.unsqueeze(1)).long()
    return {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion * mask,
            "completion_mask": mask}


def _trainer(model, tokenizer, tmp_path, loss_type: str, beta: float, correction: bool = True):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(output_dir=str(tmp_path), loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=0.28,
                        num_generations=GENERATIONS, per_device_train_batch_size=GENERATIONS * 2,
                        max_completion_length=COMPLETION_LENGTH, report_to="none", use_cpu=True, bf16=False,
                        logging_steps=1, use_bias_correction_kl=correction)
    return GRPOTrainer(model=model, reward_funcs=[lambda completions, **kwargs: [0.0] * len(completions)],
                       args=config, train_dataset=Dataset.from_list([{"prompt": "hello"}] * 8),
                       processing_class=tokenizer)


@pytest.mark.parametrize("beta, correction", [(0.0, True), (0.04, True), (0.04, False)])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_our_grpo_loss_equals_trls(loss_type, beta, correction, tiny_model_dir, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()  # TRL's eval mode: no division by accumulation steps (ours has none either)
    batch = _batch(model.config.vocab_size)
    with torch.no_grad():
        current = completion_logps(model, **batch)
    shift = torch.linspace(-0.4, 0.4, current.numel()).view_as(current)
    old, ref = (current + shift) * batch["completion_mask"], (current - 0.5 * shift) * batch["completion_mask"]
    advantages = group_advantages(REWARDS, GENERATIONS)
    trainer = _trainer(model, tiny_tokenizer, tmp_path, loss_type, beta, correction)
    theirs = trainer._compute_loss(model, batch | {"advantages": advantages, "old_per_token_logps": old,
                                                   "ref_per_token_logps": ref})
    theirs.backward()
    their_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    model.zero_grad()
    settings = GrpoSettings(loss_type=loss_type, beta=beta, epsilon_low=0.2, epsilon_high=0.28,
                            num_generations=GENERATIONS, max_completion_length=COMPLETION_LENGTH,
                            kl_bias_correction=correction)
    ours, metrics = grpo_loss(completion_logps(model, **batch), old, ref, advantages, batch["completion_mask"],
                              settings)
    ours.backward()
    our_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    assert abs(ours.item() - theirs.item()) < 1e-4, (ours.item(), theirs.item())  # the bound
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-7, rtol=1e-5)  # and what it really is
    assert abs(our_norm - their_norm) < 1e-5 * max(1.0, their_norm), (our_norm, their_norm)
    assert metrics["clip_ratio"].max() > 0  # the shifts made some tokens clip: the clipped branch is compared too
    assert ("kl" in metrics) == bool(beta)


def test_advantages_are_group_relative():
    advantages = group_advantages(REWARDS, GENERATIONS)
    first = REWARDS[:4]
    torch.testing.assert_close(advantages[:4], (first - first.mean()) / (first.std() + 1e-4))
    assert abs(advantages.view(2, 4).sum(dim=1)).max() < 1e-5  # each group's advantages sum to zero
    torch.testing.assert_close(group_advantages(REWARDS, GENERATIONS, "none")[:4], first - first.mean())
    assert group_advantages(torch.ones(4), 4).abs().max() == 0  # one reward for the whole group: no signal
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        group_advantages(REWARDS, 3)
    with pytest.raises(ValueError, match="loss_type 'dapo'"):
        GrpoSettings(loss_type="dapo")
