"""Using a tuned model: chat with it (more to come: the MLflow registry, GGUF for llama.cpp and Ollama)."""
