"""Using a tuned model: chat with it (a folder or a GGUF), its model card, its MLflow registered chat model."""
