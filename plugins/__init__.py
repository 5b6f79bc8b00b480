"""Training plugins (found through the `dpo_harness.plugins` entry-point group)."""
