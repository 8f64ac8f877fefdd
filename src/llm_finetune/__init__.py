"""Fine-tune causal language models as reproducible Kedro pipelines."""
__version__ = "0.1.0"
