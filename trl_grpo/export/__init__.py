"""Exports of a run behind export.py: the merged model, a GGUF file, the model card, the hub."""
