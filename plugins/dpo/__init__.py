"""The DPO training plugin."""
