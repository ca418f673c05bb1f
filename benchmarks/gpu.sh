#!/usr/bin/env bash
# The GPU benchmarks in two batches that each fit a 10-minute run on a lent GPU machine:
#   bash benchmarks/gpu.sh select OUT   # the CUDA-only tests, one k-center pick's anatomy, k-center on
#                                       # the GPU, auto vs k-center at 1M, dedup at 1M
#   bash benchmarks/gpu.sh embed OUT    # embedding throughput: ViT-B-32 / B-16 / L-14, decode, nvJPEG
# Logs land in OUT (default .bench/gpu). Packages the machine lacks can travel as wheels in .whl/
# (BENCHMARKS.md, "GPU"); without .whl/ the current environment is used as it is.
set -uo pipefail
part=${1:?select or embed}
out=${2:-.bench/gpu}
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0))" >> "$out/gpu.txt"
case $part in
    select)
        python3 -m pytest -q -p no:cacheprovider tests/test_kcenter_cuda.py tests/test_select_cuda.py 2>&1 | tee "$out/pytest_cuda.log"
        timeout 150 python3 -m benchmarks.kcenter_gpu 2>&1 | tee "$out/kcenter_gpu.log"
        python3 -m benchmarks.selection gpu 2>&1 | tee "$out/selection_gpu.log"
        for b in 200 5000; do
            python3 -m benchmarks.selection auto --n 1000000 --budget "$b" --device cuda 2>&1 | tee -a "$out/selection_auto.log"
        done
        python3 -m benchmarks.dedup speed --n 1000000 --device cuda --naive-n 200000 2>&1 | tee "$out/dedup_speed.log"
        ;;
    embed)
        timeout 420 python3 -m benchmarks.embed --device cuda --json "$out/embed.json" 2>&1 | tee "$out/embed.log"
        ;;
    *)
        echo "unknown part $part: select or embed" >&2
        exit 2
        ;;
esac
