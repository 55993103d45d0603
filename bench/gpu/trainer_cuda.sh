#!/usr/bin/env bash
# The PyTorch trainer worker on a CUDA GPU, in under 5 minutes, with no
# downloads: an HF Qwen2 model at the 0.5B shapes built from a config
# (random weights), trained through the worker's own handlers; prints
# training tokens/s, peak memory, achieved TFLOP/s against a measured bf16
# matmul, and the built-in architecture's log-prob agreement CUDA vs CPU.
# Needs torch >= 2.4 with CUDA and transformers. Usage:
#   bench/gpu/trainer_cuda.sh [--tokens 16384] [--micro-batch-tokens 4096] [--steps 5]
# The report is also written to bench/gpu/trainer_cuda.out.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
PYTHONPATH="$PWD/trainer/torch${PYTHONPATH:+:$PYTHONPATH}" timeout 290 "$PY" bench/gpu/trainer_cuda.py "$@" | tee bench/gpu/trainer_cuda.out
