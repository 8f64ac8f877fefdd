"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from llm_finetune.hooks import TrackingHook

STAGES = ("rm", "dpo", "pt")
HOOKS = (
    TrackingHook(
        artifact_folders=("adapter", "rm.reward_model", "dpo.adapter", "pt.adapter"),
        metric_datasets={"summary_metrics": "", "align_report": "align.", "contamination_report": "contamination.",
                         "train_tokenize_stats": "tokenize.train.", "val_tokenize_stats": "tokenize.val.",
                         "eval_summary_metrics": "", "base_generation_timing": "generation.base.",
                         "tuned_generation_timing": "generation.tuned."}
                        | {f"{stage}.{name}": f"{stage}.{prefix}" for stage in STAGES
                           for name, prefix in (("metrics", ""), ("align_report", "align."),
                                                ("contamination_report", "contamination."))},
        text_artifacts={"evaluation_report": "evaluation_report.md", "eval_report": "eval_report.md",
                        "train_mask_preview": "train_mask_preview.html"},
    ),
)
CONFIG_LOADER_CLASS = OmegaConfigLoader
# "soft" merging lets conf/local or conf/test override single nested keys (e.g. train.max_steps)
# conf/<env>/datasets.yml (the dataset registry) is read as parameters: `params:datasets`.
CONFIG_LOADER_ARGS = {
    "base_env": "base", "default_run_env": "local", "merge_strategy": {"parameters": "soft"},
    "config_patterns": {"parameters": ["parameters*", "parameters*/**", "**/parameters*", "datasets*"]},
}
