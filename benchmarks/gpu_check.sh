#!/usr/bin/env bash
# One short GPU check: every front door on CUDA (tools/gpu/cuda_check.py); the fast kernel's property
# comparison on CUDA (fused Triton steps, graph capture and replay; every cell-variant case through the
# fused variant steps, and each variant's time fused vs torch ops), peak memory, and cuDNN-vs-flexible
# timings with CUDA graphs and Triton steps on (benchmarks/gpu_check.py; ``--all``: also each alone); then
# the per-step GEMMs (benchmarks/gpu_small_gemm.py). Needs a python3 with CUDA torch and Triton (the device
# image has both); installs nothing. Run from the repo root; writes into $OUT when set, else into the current
# folder.
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 tools/gpu/cuda_check.py cuda 2>&1 | tee "${OUT:-.}/cuda_check.txt"
python3 benchmarks/gpu_check.py "$@"
# last, so that its few lines end the output: the per-step GEMMs that bound the projected forward
python3 benchmarks/gpu_small_gemm.py
