"""``train.workers``: DataLoader worker processes build the batches, and the stream is unchanged
(batch j comes from worker j mod W and is yielded in order); ``Stream`` reuses one iterator for
consecutive positions and restarts on a jump, with the same batches either way."""
from __future__ import annotations

import pytest
import torch

from mstar_engine.data.load import load_data
from mstar_engine.data.stream import Stream, training_source
from mstar_engine.util.devices import training_device
from mstar_engine.spec import load_spec_text
from mstar_engine.spec.resolve import resolve


def _spec(data: str, extra: str = ""):
    return resolve(load_spec_text(f"""
        [experiment]
        name = "w"
        [process]
        family = "gaussian"
        [data]
        name = "{data}"
        {extra}
        """).spec)


@pytest.mark.parametrize("data,extra", [("gaussian-mixture", "num_examples = 500"), ("digits", "flip = true")])
def test_workers_yield_the_same_stream(data, extra):
    if data == "digits":
        pytest.importorskip("sklearn")
    spec = _spec(data, extra)
    loaded = load_data(spec.data, 0)
    plain = training_source(loaded, 32, 0, labelled=spec.network.class_conditional, flip=spec.data.flip)(64)
    pooled = training_source(loaded, 32, 0, labelled=spec.network.class_conditional, flip=spec.data.flip, workers=2)(64)
    for _ in range(7):  # several rounds over both workers, an epoch boundary for the 450 training rows
        torch.testing.assert_close(next(pooled), next(plain), rtol=0, atol=0)


def test_stream_restarts_on_a_jump_only():
    calls = []

    def source(start):
        calls.append(start)
        return iter(range(start, 10**6, 4))

    stream = Stream(source)
    assert [stream.batch_at(p, 4) for p in (0, 4, 8)] == [0, 4, 8]
    assert stream.batch_at(40, 4) == 40
    assert calls == [0, 40]


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match='accelerator = "cuda" but no GPU is visible'):
        training_device("cuda")
    assert training_device("auto").type == "cpu"
