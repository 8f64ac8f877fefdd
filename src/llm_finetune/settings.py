"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from llm_finetune.hooks import ParameterCheckHook, TrackingHook

# ParameterCheckHook: unknown runtime parameters and credentials in URLs stop the run before anything runs;
# TrackingHook: what it logs comes from the catalog's `metadata.tracking`
HOOKS = (ParameterCheckHook(), TrackingHook())
CONFIG_LOADER_CLASS = OmegaConfigLoader
# "soft" merging lets conf/local or conf/test override single nested keys (e.g. train.max_steps)
# conf/<env>/datasets.yml (the dataset registry) is read as parameters: `params:datasets`.
CONFIG_LOADER_ARGS = {
    "base_env": "base", "default_run_env": "local", "merge_strategy": {"parameters": "soft"},
    "config_patterns": {"parameters": ["parameters*", "parameters*/**", "**/parameters*", "datasets*"]},
}
