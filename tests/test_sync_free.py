"""The fixed-size inference path must not read tensor values on the host.

On CUDA, ``.item()``, ``bool(tensor)``, ``nonzero`` and tensors built from Python numbers inside a forward pass each
force a device synchronisation (or a host-to-device copy) per call, and they make CUDA-graph capture fail (the
``cuda_graphs`` fast mode). The CPU can still see them: every one of them goes through one of the ATen operators below,
which a dispatch mode records. Camera validation runs before the model (outside the captured function) and is allowed
to read values.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from triplanenet.bench import build_preset_model, synthetic_inputs
from triplanenet.perf import FastRunner, InferenceSettings

HOST_READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "lift_fresh", "_unique2", "equal"}
"""ATen operators that read device values on the host (``item``/``bool``/``if tensor:``), have data-dependent output
shapes, or copy Python data into a new tensor."""


class HostReadRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_READS:
            self.seen[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module", params=["tiny", "tiny-v2"])
def tiny(request):
    model = build_preset_model(request.param, torch.device("cpu"), seed=0)
    return model, synthetic_inputs(model, 2, 0, torch.device("cpu"))


def test_the_recorder_sees_host_reads() -> None:
    with HostReadRecorder() as recorder:
        values = torch.ones(3)
        values.sum().item()
        bool(values.any())
        values.nonzero()
        torch.tensor([1.0, 2.0])
    assert {"_local_scalar_dense", "nonzero", "lift_fresh"} <= set(recorder.seen)


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_full_inversion_forward_reads_nothing_on_the_host(tiny, deterministic: bool, mode: str) -> None:
    model, inputs = tiny
    runner = FastRunner(
        lambda x, c: model(x, c, deterministic=deterministic).image, InferenceSettings.from_mode(mode), "cpu"
    )
    with HostReadRecorder() as recorder:
        image = runner(inputs["x"], inputs["camera"])
    assert image.shape[0] == 2
    assert dict(recorder.seen) == {}


def test_encoders_and_render_read_nothing_on_the_host(tiny) -> None:
    model, inputs = tiny
    with torch.inference_mode(), HostReadRecorder() as recorder:
        ws = model.encode_ws(inputs["x"])
        planes = model.decoder.planes(ws)
        model.predict_offsets(inputs["x"], inputs["rendered"], planes, rendered_mirror=inputs["rendered"].flip(-1))
        model.decoder.render(planes, ws, inputs["camera"])
    assert dict(recorder.seen) == {}
