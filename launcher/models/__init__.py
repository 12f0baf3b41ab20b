"""The models: catalogue and downloads, the one llama.cpp runtime, embedder and rerankers."""
