"""``python -m dpo_harness.cli`` (what torchrun and accelerate launch run)."""

from dpo_harness.cli import main

main()
