#!/usr/bin/env bash
# Every GPU check and benchmark of issue 10 in one device call (the device budget is ~15 minutes per session,
# machine start-up included), ordered by importance: whatever a step leaves behind survives a later timeout.
#
# On the CPU machine, once, before the call (the GPU machine has no network; the mirror lacks docs/teaser.gif, so
# export everything but docs/):
#   G=<git dir printed by the fetch tool for anantarb/triplanenet>; mkdir -p .cache/official/triplanenet
#   git --git-dir $G archive HEAD $(git --git-dir $G ls-tree --name-only HEAD | grep -vx 'docs\|.gitmodules') \
#       | tar -x -C .cache/official/triplanenet
# Then one device call, carrying that folder (it is gitignored):
#   run(command="bash benchmarks/gpu_session.sh", carry=[".cache/official"], timeout_s=580)
# (the steps' own limits add up to about 9 minutes; each writes its results before the next one starts)
# Results land in $OUT (the device tool's folder; outputs/gpu elsewhere): env.txt, parity.txt, side/, side_v2/,
# bench/, compile/, and a log per step. Uses the machine's own python3 (PyTorch with CUDA) and this checkout's sources.
#
# Rehearsal on a CPU (checks that every step runs, at tiny sizes, in about ten minutes on 2 cores):
#   SMOKE=1 PY=.venv/bin/python bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
SMOKE=${SMOKE:-0}
step() { echo "== $1 ($(date +%T))"; }

if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu
    SIDE_ARGS=(--batch-sizes 1 --train-batch-sizes 1 --repeats 1 --warmup 1 --depth-samples 8
        --train-depth-samples 4 --workloads psp,inversion,train_step --fast-modes bf16)
    BENCH_ARGS=(--preset tiny --batch-sizes 1,2 --repeats 2 --modes fp32,bf16,channels_last)
    COMPILE_ARGS=(--preset tiny --batch-sizes 1 --repeats 2 --modes fp32,compile --workloads render)
    OPS_ARGS=(--batch-sizes 1 --repeats 1 --warmup 1 --depth-samples 8 --workloads inversion)
    SIDE_V2_ARGS=(--batch-sizes 1 --repeats 1 --warmup 1 --depth-samples 8 --workloads inversion)
    SIDE_V2_LIMIT=240  # full-size encoders on 2 CPU cores: about 2 minutes
    CHUNK_ARGS=(--preset tiny --batch-sizes 1,2 --repeats 1 --workloads invert --modes fp32)
    CHUNKS=(4096 65536)
    CHUNK_LIMIT=30
else
    DEVICE=cuda
    SIDE_ARGS=(--batch-sizes 1,8,32 --train-batch-sizes 1,3 --repeats 5 --warmup 2 --train-amp
        --fast-modes bf16,fp16,bf16+cuda_graphs,fp16+cuda_graphs)
    BENCH_ARGS=(--preset ffhq --batch-sizes 1,8,32 --repeats 5 --workloads encode,render,invert
        --modes fp32,bf16,fp16,channels_last,cuda_graphs,bf16+cuda_graphs,fp16+cuda_graphs)
    COMPILE_ARGS=(--preset ffhq --batch-sizes 1 --repeats 5 --workloads invert --modes fp32,compile,bf16+compile)
    OPS_ARGS=(--batch-sizes 1,8 --repeats 5 --warmup 2 --workloads synthesis,inversion)
    SIDE_V2_ARGS=(--batch-sizes 1,8 --repeats 3 --warmup 1 --workloads triplane_encoder,inversion)
    SIDE_V2_LIMIT=40
    CHUNK_ARGS=(--preset ffhq --batch-sizes 1,32 --repeats 3 --workloads invert --modes fp32)
    CHUNKS=(262144 1048576 4194304 16777216)
    CHUNK_LIMIT=20
fi

step environment
{ nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"; } \
    > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tail -n 3

if [ "$DEVICE" = cuda ]; then
    step "CPU vs CUDA parity of the full TriPlaneNet forward (bundled model, fp32, TF32 off)"
    timeout 45 $PY - > "$OUT/parity.txt" 2>&1 <<'PYEOF'
import torch
from triplanenet.demo import load_default_model
from triplanenet.eg3d.camera import camera_label
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
cpu = load_default_model("cpu")
gpu = load_default_model("cuda")
x = torch.rand(4, 3, 64, 64) * 2 - 1
c = camera_label(torch.tensor([0.0, 0.3, -0.3, 0.5]), torch.zeros(4))
a = cpu(x, c, deterministic=True)
b = gpu(x.cuda(), c.cuda(), deterministic=True)
for name in ("ws", "offsets", "image", "depth"):
    print(name, "max |d| cpu vs cuda:", (getattr(a, name) - getattr(b, name).cpu()).abs().max().item())
PYEOF
    cat "$OUT/parity.txt"
fi

OFFICIAL=.cache/official/triplanenet
step "same-process side-by-side with the official code, its custom ops on the reference path (no build)"
if [ -d $OFFICIAL ]; then
    timeout 150 $PY benchmarks/official_side_by_side.py --official $OFFICIAL --device $DEVICE --official-ops ref \
        "${SIDE_ARGS[@]}" --out "$OUT/side" > "$OUT/side.log" 2>&1
    echo "exit $?"; cat "$OUT/side/side_by_side.md" 2>/dev/null || tail -n 20 "$OUT/side.log"
else
    echo "no $OFFICIAL: carry an export of anantarb/triplanenet (see the top of this script)"
fi

step "TriPlaneNet v2 side-by-side: official v2 forward vs ours (input + mirror/novel renders), reference ops"
if [ -d $OFFICIAL ]; then
    timeout "$SIDE_V2_LIMIT" $PY benchmarks/official_side_by_side.py --version 2 --official $OFFICIAL --device $DEVICE \
        --official-ops ref "${SIDE_V2_ARGS[@]}" --out "$OUT/side_v2" > "$OUT/side_v2.log" 2>&1
    echo "exit $?"; cat "$OUT/side_v2/side_by_side.md" 2>/dev/null || tail -n 20 "$OUT/side_v2.log"
fi

step "benchmark suite (ours, every fast mode but compile)"
timeout 100 $PY -m triplanenet.cli.main bench --device $DEVICE "${BENCH_ARGS[@]}" --out "$OUT/bench" \
    > "$OUT/bench.log" 2>&1
echo "exit $?"; cat "$OUT/bench/bench.md" 2>/dev/null || tail -n 30 "$OUT/bench.log"

step "renderer chunk size (ours, fp32 inversion; the CUDA default is 2^22 points)"
for CHUNK in "${CHUNKS[@]}"; do
    timeout "$CHUNK_LIMIT" $PY -m triplanenet.cli.main bench --device $DEVICE "${CHUNK_ARGS[@]}" \
        --points-per-chunk "$CHUNK" --out "$OUT/chunk_$CHUNK" > "$OUT/chunk_$CHUNK.log" 2>&1
    echo "points/chunk $CHUNK: exit $?"; grep '^| invert' "$OUT/chunk_$CHUNK/bench.md" 2>/dev/null
done

step "side-by-side again with the official custom CUDA ops built (JIT; the build falls in the warm-up)"
if [ -d $OFFICIAL ]; then
    timeout 75 $PY benchmarks/official_side_by_side.py --official $OFFICIAL --device $DEVICE --official-ops cuda \
        "${OPS_ARGS[@]}" --out "$OUT/side_cuda_ops" > "$OUT/side_cuda_ops.log" 2>&1
    echo "exit $?"; cat "$OUT/side_cuda_ops/side_by_side.md" 2>/dev/null || tail -n 20 "$OUT/side_cuda_ops.log"
fi

step "torch.compile (ours; first call is the compile time)"
timeout 45 $PY -m triplanenet.cli.main bench --device $DEVICE "${COMPILE_ARGS[@]}" --out "$OUT/compile" \
    > "$OUT/compile.log" 2>&1
echo "exit $?"; cat "$OUT/compile/bench.md" 2>/dev/null || tail -n 30 "$OUT/compile.log"
step done
