"""Models: the classic MHA layer, masks, blocks, presets, .keras round-trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import rel_l2

from attnkit.core.errors import ModelError
from attnkit.models import PRESETS, get_preset
from attnkit.models.attention import (
    MultiHeadAttention,
    additive_padding_mask,
    causal_mask,
    copy_weights_to_keras_mha,
    padding_mask_from_ids,
    padding_mask_from_lengths,
)
from attnkit.models.transformer import (
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    build_seq2seq,
)

SMALL = {"d_model": 32, "num_heads": 4, "ffn_dim": 64}


def test_mha_rejects_indivisible_heads_naming_both_numbers():
    with pytest.raises(ModelError, match=r"\(100\).*\(12\)"):
        MultiHeadAttention(d_model=100, num_heads=12)
    with pytest.raises(ModelError, match="100"):
        TransformerEncoderBlock(d_model=100, num_heads=12, ffn_dim=64)


def test_mha_shapes_weights_and_additive_mask(rng):
    mha = MultiHeadAttention(32, 4)
    q = rng.standard_normal((2, 5, 32)).astype("float32")
    kv = rng.standard_normal((2, 7, 32)).astype("float32")
    keep = np.ones((2, 7), "int32")
    keep[1, 4:] = 0
    out, weights = mha(q, kv, attention_mask=additive_padding_mask(keep), return_attention_scores=True)
    assert out.shape == q.shape
    w = np.asarray(weights)
    assert w.shape == (2, 4, 5, 7)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert w[1, :, :, 4:].max() < 1e-6  # masked keys get (numerically) zero weight
    assert w[1, :, :, :4].min() > 0
    # the classic sub-steps: split_heads then merge_heads is the identity
    x = mha.wq(q)
    np.testing.assert_array_equal(np.asarray(mha.merge_heads(mha.split_heads(x, 2), 2)), np.asarray(x))


def test_mask_helpers():
    ids = np.array([[5, 3, 0, 0], [1, 2, 3, 4]], "int32")
    np.testing.assert_array_equal(np.asarray(padding_mask_from_ids(ids)), [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(
        np.asarray(padding_mask_from_lengths(np.array([2, 4]), 4)), [[1, 1, 0, 0], [1, 1, 1, 1]]
    )
    c = np.asarray(causal_mask(3))[0, 0]
    np.testing.assert_array_equal(c, [[0, 1, 1], [0, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "padding-mask"])
def test_classic_mha_equals_keras_mha_with_copied_weights(rng, masked):
    classic = MultiHeadAttention(64, 8)
    x = rng.standard_normal((3, 10, 64)).astype("float32")
    keep = (np.arange(10)[None] < np.array([[10], [6], [3]])).astype("int32")
    mask = additive_padding_mask(keep) if masked else None
    ours = np.asarray(classic(x, x, attention_mask=mask))
    theirs = keras.layers.MultiHeadAttention(num_heads=8, key_dim=8)
    theirs(x, x)
    copy_weights_to_keras_mha(classic, theirs)
    ref = np.asarray(theirs(x, x, attention_mask=keep[:, None, :].astype(bool) if masked else None))
    assert rel_l2(ref, ours) <= 1e-5


def test_block_option_keras_attention_matches_classic(rng):
    cfg = {**SMALL, "activation": "gelu"}
    classic = TransformerEncoderBlock(**cfg)
    other = TransformerEncoderBlock(**cfg, attention="keras")
    x = rng.standard_normal((2, 6, 32)).astype("float32")
    keep = np.array([[1] * 6, [1] * 3 + [0] * 3], "int32")
    classic(x, padding_mask=keep)
    other(x, padding_mask=keep)
    copy_weights_to_keras_mha(classic.self_attention, other.self_attention)
    for name in ("attention_norm", "ffn_inner", "ffn_outer", "ffn_norm"):
        getattr(other, name).set_weights(getattr(classic, name).get_weights())
    assert rel_l2(classic(x, padding_mask=keep), other(x, padding_mask=keep)) <= 1e-5


def test_post_ln_and_pre_ln_differ_and_post_ln_is_normalised(rng):
    x = rng.standard_normal((2, 6, 32)).astype("float32")
    post = TransformerEncoderBlock(**SMALL)
    pre = TransformerEncoderBlock(**SMALL, norm_first=True)
    y_post, y_pre = np.asarray(post(x)), np.asarray(pre(x))
    pre(x)
    pre.set_weights(post.get_weights())
    assert rel_l2(np.asarray(post(x)), np.asarray(pre(x))) > 1e-2
    np.testing.assert_allclose(y_post.mean(-1), 0.0, atol=1e-4)  # post-LN output is layer-normalised
    assert np.abs(y_pre.mean(-1)).max() > 1e-3


def test_decoder_is_causal_and_ignores_padding(rng):
    block = TransformerDecoderBlock(**SMALL)
    x = rng.standard_normal((1, 8, 32)).astype("float32")
    y = np.asarray(block(x))
    x2 = x.copy()
    x2[:, 5:] = rng.standard_normal((1, 3, 32))
    y2 = np.asarray(block(x2))
    np.testing.assert_allclose(y[:, :5], y2[:, :5], atol=1e-5)  # the past does not see the future
    assert np.abs(y[:, 5:] - y2[:, 5:]).max() > 1e-3


def test_encoder_ignores_padded_tokens(rng):
    model = get_preset("encoder-tiny").build(seed=3)
    ids = rng.integers(1, 1024, (2, 12)).astype("int32")
    keep = np.ones((2, 12), "int32")
    keep[:, 8:] = 0
    ids2 = ids.copy()
    ids2[:, 8:] = rng.integers(1, 1024, (2, 4))
    a = np.asarray(model({"token_ids": ids, "padding_mask": keep})["hidden_states"])
    b = np.asarray(model({"token_ids": ids2, "padding_mask": keep})["hidden_states"])
    np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-5)


def _roundtrip(layer_or_model, tmp_path, *inputs, **kwargs):
    model = layer_or_model
    if isinstance(layer_or_model, keras.layers.Layer) and not isinstance(layer_or_model, keras.Model):
        symbolic = [keras.Input(i.shape[1:], dtype=i.dtype) for i in inputs]
        out = layer_or_model(*symbolic, **kwargs)
        model = keras.Model(symbolic if len(symbolic) > 1 else symbolic[0], out)
    before = np.asarray(model(list(inputs) if len(inputs) > 1 else inputs[0]))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = np.asarray(loaded(list(inputs) if len(inputs) > 1 else inputs[0]))
    np.testing.assert_allclose(before, after, rtol=1e-6, atol=1e-6)
    return loaded


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiHeadAttention(32, 4),
        lambda: TransformerEncoderBlock(**SMALL, activation="gelu", norm_first=True),
        lambda: TransformerEncoderBlock(**SMALL, attention="keras"),
        lambda: TransformerDecoderBlock(**SMALL),
    ],
    ids=["mha", "encoder-block-preln-gelu", "encoder-block-keras-attn", "decoder-block"],
)
def test_layers_roundtrip_through_keras_file(make, tmp_path, rng):
    layer = make()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    _roundtrip(layer, tmp_path, rng.standard_normal((2, 6, 32)).astype("float32"))


def test_embedding_roundtrip(tmp_path, rng):
    layer = TokenAndPositionEmbedding(50, 16, 32)
    _roundtrip(layer, tmp_path, rng.integers(1, 50, (2, 9)).astype("int32"))


def test_seq2seq_builder_runs_and_roundtrips(tmp_path, rng):
    cfg = {"vocab_size": 40, "max_length": 32, "encoder_layers": 1, "decoder_layers": 2, **SMALL, "activation": "relu"}
    model = build_seq2seq(cfg)
    feeds = {
        "encoder_token_ids": rng.integers(1, 40, (2, 7)).astype("int32"),
        "encoder_padding_mask": np.ones((2, 7), "int32"),
        "decoder_token_ids": rng.integers(1, 40, (2, 5)).astype("int32"),
        "decoder_padding_mask": np.ones((2, 5), "int32"),
    }
    logits = np.asarray(model(feeds)["logits"])
    assert logits.shape == (2, 5, 40)
    model.save(tmp_path / "s.keras")
    again = keras.models.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(np.asarray(again(feeds)["logits"]), logits, atol=1e-6)


@pytest.mark.parametrize("name", ["mha", "encoder-tiny", "decoder-small"])
def test_preset_param_count_matches_model(name):
    preset = get_preset(name)
    assert preset.build().count_params() == preset.params()


def test_flops_match_the_known_figure():
    # STACK_FACTS: 4-layer d=768 h=12 encoder, seq 128, batch 8 = 59.6 GFLOP; 12 layers = 179 GFLOP.
    base = get_preset("encoder-base")
    assert base.flops(128) * 8 == pytest.approx(178.7e9, rel=1e-3)
    assert base.flops(128) * 8 * 4 / 12 == pytest.approx(59.6e9, rel=1e-3)
    assert base.flops(256) > 2 * base.flops(128)  # attention is quadratic in length


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ModelError) as e:
        get_preset("bert-huge")
    for name in PRESETS:
        assert name in str(e.value)


def test_blocks_return_attention_scores_without_changing_their_output(rng):
    from attnkit.models.transformer import TransformerDecoderBlock, TransformerEncoderBlock

    x = rng.standard_normal((2, 7, 32)).astype("float32")
    memory = rng.standard_normal((2, 5, 32)).astype("float32")
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3], dtype="int32")
    enc = TransformerEncoderBlock(32, 4, 64, norm_first=True)
    plain = np.asarray(enc(x, padding_mask=mask))
    out, scores = enc(x, padding_mask=mask, return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(out), plain)
    w = np.asarray(scores["self_attention"])
    assert w.shape == (2, 4, 7, 7)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.abs(w[1, :, :, 4:]).max() < 1e-6  # padded keys get no weight
    dec = TransformerDecoderBlock(32, 4, 64, cross_attention=True)
    out, scores = dec(x, encoder_output=memory, return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(dec(x, encoder_output=memory)))
    assert scores["cross_attention"].shape == (2, 4, 7, 5)
    causal = np.asarray(scores["self_attention"])
    assert np.abs(np.triu(causal[0, 0], k=1)).max() < 1e-6  # no weight on future positions
    names = [layer.name for layer in dec._flatten_layers(include_self=False) if "dropout" in layer.name]
    assert sorted(names) == ["attention_dropout", "cross_attention_dropout", "ffn_dropout"]  # one per branch


def test_attention_maps_come_from_return_attention_scores(rng):
    from attnkit.checks.attention_maps import capture
    from attnkit.models import resolve
    from attnkit.models.attention import attention_layers

    model, spec, _ = resolve("seq2seq-base", seed=0)
    layers = attention_layers(model)
    cross = next(i for i, layer in enumerate(layers) if "cross_attention" in layer.path)
    feeds = spec.sample_feeds(1, 9, seed=4)
    maps = capture(model, spec, feeds, cross)
    assert maps.weights.shape == (8, 9, 9) and "cross_attention" in maps.layer
    np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-5)
    assert all("call" not in vars(layer) for layer in model._flatten_layers())  # nothing patched


def test_heads_are_checked_without_building_a_layer():
    from attnkit.core.errors import ModelError
    from attnkit.models.attention import check_heads
    from attnkit.models.transformer import TransformerEncoderBlock

    assert check_heads(64, 8) == 8
    with pytest.raises(ModelError, match=r"\(30\).*\(4\)"):
        TransformerEncoderBlock(30, 4, 64)


def test_model_keras_loads_after_import_attnkit_alone(tiny_export, tmp_path):
    """The README calls model.keras the float32 Keras model: `import attnkit` is all a user should need."""
    import os
    import subprocess
    import sys

    script = (
        "import attnkit, keras, numpy as np\n"
        f"m = keras.models.load_model({str(tiny_export.out / 'model.keras')!r})\n"
        "print('loaded', type(m).__name__, len(m.layers))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded" in out.stdout
