"""Tracing: dynamic signatures, named outputs, precision policies from the same weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import rel_l2

from attnkit.core.errors import AttnkitError
from attnkit.models import get_preset
from attnkit.tracing import call_model, canonical_precision, policy_scope, trace, with_policy


@pytest.fixture(scope="module")
def tiny():
    preset = get_preset("encoder-tiny")
    return preset.build(seed=7), preset.spec()


def test_signature_is_dynamic_and_named(tiny):
    model, spec = tiny
    fn = trace(model, spec)
    sig = fn.input_signature
    assert [s.name for s in sig] == ["token_ids", "padding_mask"]
    assert all(s.shape.as_list() == [None, None] for s in sig)
    for batch, seq in [(1, 16), (4, 33)]:
        feeds = spec.sample_feeds(batch, seq, seed=batch)
        out = fn(*[feeds[n] for n in spec.input_names])
        assert list(out) == ["hidden_states"]
        assert out["hidden_states"].shape == (batch, seq, 128)
        ref = call_model(model, spec, feeds)["hidden_states"]
        assert rel_l2(ref, out["hidden_states"]) < 1e-6
    assert len(fn._list_all_concrete_functions()) == 1  # one trace served both shapes


@pytest.mark.parametrize("precision,limit", [("bf16", 3e-2), ("fp16", 1e-2)])
def test_mixed_precision_uses_the_same_weights(tiny, precision, limit):
    model, spec = tiny
    clone = with_policy(model, precision)
    assert clone is not model
    assert clone.dtype_policy.name == {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[precision]
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)
    feeds = spec.sample_feeds(2, 24, seed=5)
    ref = call_model(model, spec, feeds)["hidden_states"]
    out = trace(model, spec, precision)(*[feeds[n] for n in spec.input_names])["hidden_states"]
    assert out.dtype.name == "float32"  # outputs are cast back: same interface for every precision
    err = rel_l2(ref, out)
    assert 1e-5 < err < limit  # really reduced precision, and still the same function


def test_policy_scope_restores_global_policy():
    before = keras.config.dtype_policy().name
    with policy_scope("bf16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


def test_precision_names():
    assert canonical_precision("mixed_bfloat16") == "bf16"
    assert canonical_precision("float32") == "fp32"
    with pytest.raises(AttnkitError, match="precision.*fp32, bf16, fp16"):
        canonical_precision("int4")


def test_xla_trace_matches_eager(tiny):
    model, spec = tiny
    feeds = spec.sample_feeds(2, 16, seed=9)
    ref = call_model(model, spec, feeds)["hidden_states"]
    out = trace(model, spec, jit_compile=True)(*[feeds[n] for n in spec.input_names])["hidden_states"]
    assert rel_l2(ref, out) < 1e-5
