"""Kernels: the reference loop (the oracle), torch's fused kernel, and the dispatch that picks one."""

from .dispatch import force_kernel, run_stack
from .reference import DirectionRun, DirectionWeights, run_direction_reference

__all__ = ["DirectionRun", "DirectionWeights", "force_kernel", "run_direction_reference", "run_stack"]
