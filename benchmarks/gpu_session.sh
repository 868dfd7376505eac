#!/usr/bin/env bash
# Every GPU check and benchmark of issue 10 in one device call (the device budget is ~15 minutes per session).
#
# On the CPU machine, once, before the call (the GPU machine has no network):
#   mkdir -p .cache/official/triplanenet
#   git --git-dir <path printed by the fetch tool for anantarb/triplanenet> archive HEAD | tar -x -C .cache/official/triplanenet
# Then one device call, carrying that folder (it is gitignored):
#   run(command="bash benchmarks/gpu_session.sh", carry=[".cache/official"], timeout_s=560)
# Results land in $OUT (the device tool's folder; outputs/gpu elsewhere): env.txt, parity.txt, bench/, side/.
# Uses the machine's own python3 (PyTorch with CUDA) and this checkout's sources; installs nothing.
set -uo pipefail
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
step() { echo "== $1 ($(date +%T))"; }

step environment
{ nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
    > "$OUT/env.txt" 2>&1

step "CPU vs CUDA parity of the full TriPlaneNet forward (bundled model, fp32)"
timeout 120 $PY - > "$OUT/parity.txt" 2>&1 <<'PYEOF'
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

step "benchmark suite at FFHQ size (ours, every fast mode)"
timeout 240 $PY -m triplanenet.cli.main bench --preset ffhq --device cuda --batch-sizes 1,8,32 --repeats 10 \
    --modes fp32,bf16,fp16,compile,cuda_graphs,bf16+cuda_graphs --out "$OUT/bench" 2>&1 | tail -n 60

step "same-process side-by-side with the official code"
if [ -d .cache/official/triplanenet ]; then
    timeout 180 $PY benchmarks/official_side_by_side.py --official .cache/official/triplanenet --device cuda \
        --batch-sizes 1,8,32 --repeats 10 --out "$OUT/side" 2>&1 | tail -n 40
else
    echo "no .cache/official/triplanenet: carry an export of anantarb/triplanenet (see the top of this script)"
fi
step done
