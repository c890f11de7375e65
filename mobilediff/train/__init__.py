"""Training: one loop (loop.py) with base training (base.py) and each distillation method (distill.py) as a loss on
top, the diffusion arithmetic they share (diffusion.py) and atomic checkpoints (checkpoint.py)."""
