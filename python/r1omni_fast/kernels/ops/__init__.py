"""Triton kernels, their launchers and ``torch.autograd.Function`` wrappers (imports triton)."""
