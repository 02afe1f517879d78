"""Distillation: KD losses, teacher signal sources and the trainer."""
