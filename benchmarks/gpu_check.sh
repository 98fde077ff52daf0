#!/usr/bin/env bash
# One short GPU check: property comparison of the fast kernel on CUDA, then cuDNN-vs-flexible timings.
# Needs a python3 with CUDA torch (the device image has one); installs nothing. Run from the repo root.
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 benchmarks/gpu_check.py
