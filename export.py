"""Export a trained run: the merged standalone model with a model card, a GGUF file, and the hub.

    python export.py ckpts/RUN --merged exports/my-model                  # transformers loads it, no PEFT
    python export.py ckpts/RUN --gguf exports/my-model.gguf --gguf_type q8_0   # llama.cpp, Ollama, LM Studio
    python export.py ckpts/RUN/checkpoint-20 --merged out --push_to_hub me/my-model

The exports and the card: trl_grpo/export/ (docs/export.md); the flags: trl_grpo/settings/flags.py
(``python export.py --help`` lists them).
"""

import sys

from trl_grpo.export.command import main
from trl_grpo.runs.cli import cli

if __name__ == "__main__":
    sys.exit(cli(main))
