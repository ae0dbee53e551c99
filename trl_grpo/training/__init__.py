"""Training beyond the GRPO wiring in train.py: the supervised cold start (--sft_steps)."""
