"""What each LLaMA-Factory training argument becomes here: the tables :mod:`.llamafactory` reads.

Written from LLaMA-Factory's documented arguments (``hparams/{model,data,finetuning}_args.py``) and
transformers' ``TrainingArguments``; a key missing from every table is refused as unknown.
"""

# stage -> (pipeline, training block, data block)
STAGES = {"sft": ("sft", "train", "data"), "pt": ("pt", "pt.train", "pt_data"), "rm": ("rm", "rm.train", "rm_data"),
          "dpo": ("dpo", "dpo.train", "dpo_data"), "kto": ("kto", "kto.train", "kto_data")}
EXACT_TEMPLATES = {"llama3": "llama3"}
NEAREST_TEMPLATES = {"alpaca": "alpaca (ours writes an input under '### Input:', LLaMA-Factory joins it to the "
                               "instruction and trains '\\n\\n' after EOS)",
                     "chatml": "chatml (LLaMA-Factory also trains the newline after <|im_end|>)",
                     "qwen": "chatml (LLaMA-Factory also trains the newline after <|im_end|>, and its default system "
                             "is Qwen's)",
                     "mistral": "mistral (spaces around [/INST] differ)",
                     "vicuna": "vicuna (spaces differ)",
                     "zephyr": "zephyr (newlines between turns differ)", "phi": "none (our phi3 is the book's format)"}
# transformers' TrainingArguments -> our training settings (defaults read from the installed transformers)
TRAINING_KEYS = {"learning_rate": "learning_rate", "num_train_epochs": "epochs", "max_steps": "max_steps",
                 "per_device_train_batch_size": "batch_size", "per_device_eval_batch_size": "eval_batch_size",
                 "gradient_accumulation_steps": "gradient_accumulation_steps", "lr_scheduler_type": "lr_scheduler",
                 "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm", "optim": "optimizer",
                 "seed": "seed", "logging_steps": "logging_steps", "save_steps": "save_steps",
                 "neftune_noise_alpha": "neftune_noise_alpha"}
NO_EFFECT = {
    "output_dir": "outputs are versioned catalog datasets (data/06_models/<stage>/adapter/<version>)",
    "overwrite_output_dir": "every run writes new versions; nothing is overwritten",
    "logging_dir": "tracking is MLflow (mlflow.db)", "report_to": "tracking is MLflow (mlflow.db), always on",
    "run_name": "MLflow names the run after its pipeline", "plot_loss": "the loss curve is always drawn",
    "ddp_timeout": "one process", "dataloader_num_workers": "batches are built in-process",
    "dataloader_pin_memory": "batches are built in-process", "preprocessing_num_workers": "tokenization is cached",
    "preprocessing_batch_size": "tokenization is cached", "overwrite_cache": "the token cache is keyed by its inputs",
    "save_only_model": "checkpoints are kept for resume and removed after success (train.keep_checkpoints)",
    "save_strategy": "checkpoints every save_steps", "save_total_limit": "the last two checkpoints are kept",
    "logging_strategy": "logging every logging_steps", "disable_tqdm": "progress bars always",
    "include_num_input_tokens_seen": "always counted", "use_fast_tokenizer": "the model's tokenizer as saved",
    "low_cpu_mem_usage": "loading is transformers' default", "do_eval": "val loss every eval_steps; test after",
    "eval_strategy": "val loss every eval_steps", "cache_dir": "the Hugging Face cache",
    "compute_accuracy": "reward accuracy and preference metrics are always computed",
}
# LLaMA-Factory arguments we honour only at their default: {key: (default, why another value is refused)}
ONLY_DEFAULT = {
    "pure_bf16": (False, "pure bf16 (no fp32 master weights) is not supported: use bf16"),
    "deepspeed": (None, "DeepSpeed is not translated: set train.distributed with launcher: accelerate and an "
                        "accelerate config that names this DeepSpeed file (README, Scale out)"),
    "fsdp": ("", "FSDP is not translated: set train.distributed with launcher: accelerate and an accelerate FSDP "
                 "config (README, Scale out)"),
    "adapter_name_or_path": (None, "to start from an SFT adapter run the <stage>_sft pipeline after an sft run "
                                   "(the newest sft adapter, or --load-versions sft.adapter:<version>)"),
    "resume_from_checkpoint": (None, "resume with train.resume: true (checkpoints are keyed by the run's inputs)"),
    "eval_dataset": (None, "validation comes from the split of the training data (val_size)"),
    "do_predict": (False, "prediction-only runs are not mapped; every pipeline generates on its test split"),
    "predict_with_generate": (False, "prediction-only runs are not mapped"),
    "streaming": (False, "datasets are read whole (their rows are versioned)"),
    "tokenized_path": (None, "tokenized data is cached by the pipeline"),
    "additional_target": (None, "extra trainable modules beside LoRA are not supported"),
    "use_rslora": (False, "rank-stabilised LoRA is not supported"), "pissa_init": (False, "PiSSA is not supported"),
    "loraplus_lr_ratio": (None, "LoRA+ is not supported"), "create_new_adapter": (False, "not supported"),
    "use_galore": (False, "GaLore is not supported"), "use_badam": (False, "BAdam is not supported"),
    "use_apollo": (False, "APOLLO is not supported"), "use_llama_pro": (False, "LLaMA Pro is not supported"),
    "use_unsloth": (False, "Unsloth kernels are not used"),
    "enable_liger_kernel": (False, "Liger kernels are not used"),
    "use_liger_kernel": (False, "Liger kernels are not used"),
    "shift_attn": (False, "shift short attention is not supported"),
    "mixture_of_depths": (None, "not supported"), "rope_scaling": (None, "RoPE scaling is not supported"),
    "resize_vocab": (False, "the vocabulary is the tokenizer's"), "new_special_tokens": (None, "not supported"),
    "train_from_scratch": (False, "training starts from the model's weights"),
    "upcast_layernorm": (False, "not supported"), "upcast_lmhead_output": (False, "not supported"),
    "pref_ftx": (0.0, "an SFT term in the preference loss is not supported (ORPO has its own)"),
    "pref_bco_weight": (0.0, "BCO is not supported"), "ld_alpha": (None, "LD-DPO is not supported"),
    "ref_model": (None, "the reference is the start model (the adapter disabled)"),
    "default_system": (None, "set the system prompt in the data (a system column)"),
    "tool_format": (None, "tool formats follow the template"), "lr_scheduler_kwargs": (None, "not supported"),
    "image_max_pixels": (None, "multimodal data is not supported"), "video_max_pixels": (None, "multimodal data"),
    "freeze_vision_tower": (True, "multimodal models are not supported"),
    "freeze_multi_modal_projector": (True, "multimodal models are not supported"),
    "hf_hub_token": (None, "a token would be logged with the parameters: set HF_TOKEN in the environment"),
}
OWN_KEYS = {"model_name_or_path", "model_revision", "trust_remote_code", "stage", "do_train", "finetuning_type",
            "lora_rank", "lora_alpha",
            "lora_dropout", "lora_target", "use_dora", "freeze_trainable_layers", "freeze_trainable_modules",
            "freeze_extra_modules", "pref_beta", "pref_loss", "dpo_label_smoothing", "simpo_gamma", "kto_chosen_weight",
            "kto_rejected_weight", "dataset", "dataset_dir", "max_samples", "val_size", "cutoff_len", "packing",
            "neat_packing", "train_on_prompt", "mask_history", "mix_strategy", "interleave_probs", "template", "bf16",
            "flash_attn", "disable_gradient_checkpointing", "gradient_checkpointing", "warmup_ratio", "warmup_steps",
            "eval_steps", "enable_thinking", "fp16", "quantization_bit", "quantization_method"}
KNOWN_KEYS = OWN_KEYS | set(TRAINING_KEYS) | set(NO_EFFECT) | set(ONLY_DEFAULT)
ATTENTION = {"auto": "auto", "sdpa": "sdpa", "disabled": "eager", "fa2": "flash_attention_2"}
PREF_LOSSES = ("sigmoid", "hinge", "ipo", "orpo", "simpo")
MIX = {"concat": ("concat", None), "interleave_under": ("interleave", "first_exhausted"),
       "interleave_over": ("interleave", "all_exhausted")}
