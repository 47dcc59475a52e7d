"""Instruction-tuning entry points: ``python -m train.build_data``, ``python -m train.finetune``."""
