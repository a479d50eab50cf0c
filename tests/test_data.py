"""The user's own data (--data): checked against the model's inputs, split into calibration and held-out rows,
task metrics beside rel L2, and MLPerf's gate (a reduced precision keeps >= 99 % of fp32's task metric)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from test_cli import assert_one_line_error, run

from attnkit.core.data import MAX_CALIBRATION, load_data
from attnkit.core.errors import AttnkitError
from attnkit.core.metrics import TaskMetrics, keeps, task_metrics
from attnkit.core.spec import ExportSpec, TensorSpec

VOCAB = 64


def _lm_spec(name: str, vocab: int) -> ExportSpec:
    """A language model's interface: token ids and a padding mask in, logits over ``vocab`` out, 64 positions."""
    return ExportSpec(
        name,
        (
            TensorSpec("token_ids", "int32", (None, None), ("batch", "sequence"), "tokens", vocab),
            TensorSpec("padding_mask", "int32", (None, None), ("batch", "sequence"), "padding_mask"),
        ),
        (TensorSpec("logits", "float32", (None, None, vocab), ("batch", "sequence", None)),),
        max_sequence=64,
    )


LM_SPEC = _lm_spec("lm", VOCAB)


def _tokens(rows: int, seq: int, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, VOCAB, size=(rows, seq)).astype("int32")


def test_data_is_checked_split_and_checksummed(tmp_path):
    path = tmp_path / "d.npz"
    ids = _tokens(300, 12)
    np.savez(path, token_ids=ids)  # no padding_mask: every position real
    data = load_data(path, LM_SPEC)
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.calibration == MAX_CALIBRATION and data.rows == 300  # half the rows, at most the cap
    calibration, held = data.batches("calibration"), data.batches("held_out", batch=7)
    np.testing.assert_array_equal(np.concatenate([b["token_ids"] for b in calibration]), ids[:MAX_CALIBRATION])
    np.testing.assert_array_equal(np.concatenate([b["token_ids"] for b in held]), ids[MAX_CALIBRATION:])
    assert all(len(b["token_ids"]) <= 7 for b in held)
    assert all(b["padding_mask"].all() and b["padding_mask"].shape == b["token_ids"].shape for b in held)
    small = tmp_path / "s.npz"
    np.savez(small, token_ids=ids[:9], padding_mask=np.ones((9, 12), "int64"))
    assert load_data(small, LM_SPEC).calibration == 4  # rows // 2
    assert data.record()["held_out_rows"] == 300 - MAX_CALIBRATION


@pytest.mark.parametrize(
    "case,arrays,needle",
    [
        ("missing input", {"padding_mask": np.ones((8, 4), "int32")}, "no array `token_ids`"),
        ("unknown array", {"token_ids": _tokens(8, 4), "tokens": _tokens(8, 4)}, "tokens that are not model inputs"),
        ("float ids", {"token_ids": _tokens(8, 4).astype("float32")}, "must be integers"),
        ("ids past the vocabulary", {"token_ids": _tokens(8, 4) + VOCAB}, f"the vocabulary is [0, {VOCAB})"),
        ("negative ids", {"token_ids": -_tokens(8, 4)}, "the vocabulary is"),
        ("too few rows", {"token_ids": _tokens(2, 4)}, "at least 3 are needed"),
        ("rows disagree", {"token_ids": _tokens(8, 4), "padding_mask": np.ones((7, 4), "int32")}, "different numbers"),
        ("wrong rank", {"token_ids": _tokens(8, 4)[..., None]}, "3 dimension(s)"),
        ("too long", {"token_ids": _tokens(4, 65)}, "at most 64"),
        ("labels", {"token_ids": _tokens(8, 4), "labels": np.zeros(5, "int64")}, "one entry per row"),
        ("empty", {}, "holds no arrays"),
    ],
)
def test_bad_data_is_one_line_naming_the_flag(tmp_path, case, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(AttnkitError, match="data: ") as e:
        load_data(path, LM_SPEC)
    assert needle in str(e.value) and e.value.for_cli().startswith("--data: ")


def test_not_an_npz_and_a_missing_file_are_refused(tmp_path):
    (tmp_path / "x.npz").write_text("token_ids")
    for path, needle in ((tmp_path / "x.npz", "not an .npz"), (tmp_path / "none.npz", "does not exist")):
        with pytest.raises(AttnkitError, match=needle):
            load_data(path, LM_SPEC)


TEXT_VOCAB = 258
TEXT_SPEC = _lm_spec("bytes", TEXT_VOCAB)


def _byte_tokenizer():
    """A stand-in for a keras-hub tokenizer: bytes + 1, as a model's tokenizer maps a text to ids; start token 257."""
    return (lambda text: np.frombuffer(text.encode(), np.uint8).astype("int32") + 1), TEXT_VOCAB - 1


def test_texts_are_tokenised_with_the_models_tokenizer(tmp_path):
    """A .txt (one text per line) and a .jsonl (text and label) become ids with a start token and a padding mask,
    cut to the longest sequence the model takes; the record says how."""
    lines = ["hello world", "", "ab", "x" * 80, "0123"]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    data = load_data(tmp_path / "t.txt", TEXT_SPEC, tokenizer=_byte_tokenizer)
    ids, mask = data.arrays["token_ids"], data.arrays["padding_mask"]
    assert data.rows == 4 and ids.shape == mask.shape == (4, 64)  # the empty line is no text; 81 ids cut to 64
    assert list(ids[0, :12]) == [TEXT_VOCAB - 1] + [b + 1 for b in b"hello world"] and mask[0].sum() == 12
    assert (
        list(ids[1, :3]) == [TEXT_VOCAB - 1, ord("a") + 1, ord("b") + 1] and mask[1].sum() == 3 and not ids[1, 3:].any()
    )
    assert mask[2].all() and data.texts == {"tokenizer": "function", "texts": 4, "longest": 64, "truncated": 1,
                                            "start_token": TEXT_VOCAB - 1}  # fmt: skip
    assert data.record()["texts"]["truncated"] == 1 and data.labels is None
    rows = [{"text": "one", "label": 1}, {"text": "two", "label": 0}, {"text": "three", "label": 1}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    labelled = load_data(tmp_path / "t.jsonl", TEXT_SPEC, tokenizer=_byte_tokenizer)
    assert list(labelled.labels) == [1, 0, 1] and labelled.arrays["padding_mask"].sum(1).tolist() == [4, 4, 6]


@pytest.mark.parametrize(
    "name,text,tokenizer,needle",
    [
        ("t.txt", "hello\nworld\nagain\n", None, "carries no tokenizer"),
        ("t.txt", "\n\n", _byte_tokenizer, "holds no text"),
        ("t.jsonl", '{"text": "a"}\nnot json\n{"text": "b"}\n', _byte_tokenizer, "line 2 is not JSON"),
        ("t.jsonl", '{"text": "a"}\n{"label": 1}\n{"text": "b"}\n', _byte_tokenizer, "line 2 has no string `text`"),
        ("t.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n{"text": "c"}\n', _byte_tokenizer, "some lines have"),
        ("t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": 1}\n', _byte_tokenizer, "must be an integer"),
        ("t.txt", "one\ntwo\n", _byte_tokenizer, "at least 3 are needed"),
    ],
)
def test_bad_texts_are_one_line_naming_the_flag(tmp_path, name, text, tokenizer, needle):
    (tmp_path / name).write_text(text)
    with pytest.raises(AttnkitError, match="data: ") as e:
        load_data(tmp_path / name, TEXT_SPEC, tokenizer=tokenizer)
    assert needle in str(e.value), str(e.value)


def test_texts_for_a_model_with_more_inputs_are_refused(tmp_path):
    spec = ExportSpec("s2s", TEXT_SPEC.inputs + (TensorSpec("decoder_token_ids", "int32", (None, None),
                      ("batch", "sequence"), "tokens", TEXT_VOCAB),), TEXT_SPEC.outputs)  # fmt: skip
    (tmp_path / "t.txt").write_text("a\nb\nc\n")
    with pytest.raises(AttnkitError, match="which one text per row does not fill"):
        load_data(tmp_path / "t.txt", spec, tokenizer=_byte_tokenizer)


def _lm_logits(tokens: np.ndarray, p: float) -> np.ndarray:
    """Logits under which position t gives the next token, tokens[t + 1], probability ``p`` (the rest uniform)."""
    rows, seq = tokens.shape
    logp = np.full((rows, seq, VOCAB), np.log((1 - p) / (VOCAB - 1)), np.float32)
    nxt = np.roll(tokens, -1, axis=1)
    np.put_along_axis(logp, nxt[..., None], np.log(p), -1)
    return logp


def test_task_metrics_on_logits_whose_answers_are_known():
    tokens = _tokens(6, 10)
    mask = np.ones_like(tokens)
    mask[0, 7:] = 0  # padding is never counted
    feeds = [{"token_ids": tokens, "padding_mask": mask}]
    reference = [{"logits": _lm_logits(tokens, 0.5)}]
    m = task_metrics(LM_SPEC, feeds, reference, reference, None)
    real_pairs = int((mask[:, :-1] & mask[:, 1:]).sum())
    assert m.top1_agreement == 1.0 and m.positions == int(mask.sum())
    assert m.next_token_accuracy == 1.0  # p = 0.5 beats every other token's share
    assert m.perplexity == pytest.approx(2.0, rel=1e-5)  # exp(-log 0.5) at every counted position
    flipped = reference[0]["logits"].copy()
    swap = (1, 3)  # one real position gets another argmax
    flipped[swap][(tokens[1, 4] + 1) % VOCAB] = 10.0
    got = task_metrics(LM_SPEC, feeds, reference, [{"logits": flipped}], None)
    assert got.top1_agreement == pytest.approx((int(mask.sum()) - 1) / int(mask.sum()))
    assert got.next_token_accuracy == pytest.approx((real_pairs - 1) / real_pairs)
    labels = np.roll(tokens, -1, axis=1)  # per-position labels: what the logits' argmax is everywhere
    labels[2, 5] = (labels[2, 5] + 1) % VOCAB  # one real position labelled otherwise
    labels[0, 8] = (labels[0, 8] + 1) % VOCAB  # and one padded one, which does not count
    accuracy = task_metrics(LM_SPEC, feeds, reference, reference, [labels]).accuracy
    assert accuracy == pytest.approx((int(mask.sum()) - 1) / int(mask.sum()))


def test_a_seq2seq_models_metrics_count_its_decoder_positions():
    """A translator's logits are over its decoder positions: the decoder's mask says which are real and its ids
    are the next tokens, never the encoder's (whose source here is longer and unpadded)."""
    inputs = tuple(TensorSpec(f"{side}_{name}", "int32", (None, None), ("batch", "sequence"), role, high)
                   for side in ("encoder", "decoder")
                   for name, role, high in (("token_ids", "tokens", VOCAB), ("padding_mask", "padding_mask", 2)))  # fmt: skip
    spec = ExportSpec("s2s", inputs, LM_SPEC.outputs)
    target = _tokens(4, 6)
    dec_mask = np.ones_like(target)
    dec_mask[1:, 3:] = 0
    feeds = [{"encoder_token_ids": _tokens(4, 9, seed=3), "encoder_padding_mask": np.ones((4, 9), "int32"),
              "decoder_token_ids": target, "decoder_padding_mask": dec_mask}]  # fmt: skip
    labels = np.roll(target, -1, axis=1)
    logits = _lm_logits(target, 0.5)
    logits[1, 4] = 0.0  # a padded position answers wrongly: it does not count
    logits[1, 4, (labels[1, 4] + 1) % VOCAB] = 9.0
    m = task_metrics(spec, feeds, [{"logits": logits}], [{"logits": logits}], [labels])
    assert m.positions == int(dec_mask.sum()) and m.accuracy == 1.0 and m.next_token_accuracy == 1.0


def test_the_gate_keeps_a_share_of_fp32s_metric():
    fp32 = TaskMetrics("logits", 100, top1_agreement=1.0, accuracy=0.80, next_token_accuracy=0.5)
    assert keeps(fp32, TaskMetrics("logits", 100, top1_agreement=0.9, accuracy=0.795))[0]  # 99.4 % of 0.80
    ok, line = keeps(fp32, TaskMetrics("logits", 100, top1_agreement=0.999, accuracy=0.78))  # 97.5 %
    assert not ok and line.startswith("accuracy") and "< 99%" in line
    assert keeps(fp32, TaskMetrics("logits", 100, top1_agreement=0.999, accuracy=0.78), target=0.97)[0]
    # no labels: next-token accuracy where fp32 scores on it, else top-1 agreement with fp32
    no_labels = TaskMetrics("logits", 100, top1_agreement=1.0, next_token_accuracy=0.5)
    ok, line = keeps(no_labels, TaskMetrics("logits", 100, top1_agreement=0.98, next_token_accuracy=0.5))
    assert ok and line.startswith("next token accuracy")
    random_weights = TaskMetrics("logits", 100, top1_agreement=1.0, next_token_accuracy=0.0)
    ok, line = keeps(random_weights, TaskMetrics("logits", 100, top1_agreement=0.98, next_token_accuracy=0.0))
    assert not ok and line.startswith("top1 agreement")


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    """A tiny Keras LM (token ids -> logits) exported to ONNX fp32 and int8."""
    import keras

    import attnkit

    root = tmp_path_factory.mktemp("lm")
    keras.utils.set_random_seed(17)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Embedding(VOCAB, 16)(ids))
    keras.Model(ids, {"logits": keras.layers.Dense(VOCAB, name="logits")(x)}).save(root / "lm.keras")
    return attnkit.export(str(root / "lm.keras"), root / "exp", formats="onnx", precision="fp32,int8")


def test_verify_data_gates_each_runner_by_its_task_metric(lm_export, tmp_path):
    """On held-out rows only, against eager fp32 on the same rows; the exit code follows the gate, and the gate's
    verdict follows the measured values (int8 is held to the target it is given, either way)."""
    import keras

    path = tmp_path / "data.npz"
    tokens = _tokens(40, 24, seed=5)
    # labels a user might have: mostly what the model answers, 30 % of positions something else
    eager = keras.models.load_model(lm_export.out / "model.keras")
    labels = np.asarray(eager(tokens)["logits"]).argmax(-1)
    other = np.random.default_rng(6).random(labels.shape) < 0.3
    labels[other] = (labels[other] + 1) % VOCAB
    np.savez(path, token_ids=tokens, labels=labels)
    code, out = run("verify", lm_export.out, "--data", path, "--json", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())["data"]
    assert data["held_out_rows"] == 20 and data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    checks = {(c["backend"], c["precision"]): c for c in data["checks"]}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8")} <= set(checks)
    base = data["fp32_eager"]["accuracy"]
    assert base is not None and 0 < base < 1  # labels given and fp32 scores on them: accuracy is the gate
    for c in checks.values():
        kept = c["metrics"]["accuracy"] / base
        assert c["passed"] == (kept >= 0.99) and c["verdict"].startswith("accuracy"), c
    assert checks[("onnxruntime", "fp32")]["metrics"]["top1_agreement"] == 1.0
    assert (code == 0) == all(c["passed"] for c in checks.values()), out
    strict = checks[("onnxruntime", "int8")]["metrics"]["accuracy"] / base + 1e-6
    if strict <= 1.0:  # a target just above what int8 kept fails it, and not fp32
        code, out = run("verify", lm_export.out, "--data", path, "--accuracy-target", str(strict), "--json",
                        tmp_path / "strict.json")  # fmt: skip
        again = {
            (c["backend"], c["precision"]): c
            for c in json.loads((tmp_path / "strict.json").read_text())["data"]["checks"]
        }
        assert code != 0 and not again[("onnxruntime", "int8")]["passed"] and again[("onnxruntime", "fp32")]["passed"]


def test_export_data_calibrates_and_records_it(tmp_path):
    """export --data records the data's checksum and split in the manifest and checks on its held-out rows; bad
    data is refused before anything is written."""
    import keras

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(VOCAB, 8)(ids)
    keras.Model(ids, {"logits": keras.layers.Dense(VOCAB, name="logits")(x)}).save(tmp_path / "m.keras")
    np.savez(tmp_path / "bad.npz", token_ids=_tokens(6, 8) + VOCAB)
    code, out = run("export", tmp_path / "m.keras", "--format", "onnx", "--data", tmp_path / "bad.npz", "--out",
                    tmp_path / "o")  # fmt: skip
    assert_one_line_error(code, out, "--data", "vocabulary")
    assert not (tmp_path / "o").exists()
    np.savez(tmp_path / "good.npz", token_ids=_tokens(10, 8))
    code, out = run("export", tmp_path / "m.keras", "--format", "onnx", "--data", tmp_path / "good.npz",
                    "--accuracy-target", "0.5", "--out", tmp_path / "o")  # fmt: skip
    assert code == 0, out
    recorded = json.loads((tmp_path / "o" / "manifest.json").read_text())["data"]
    assert recorded["calibration_rows"] == 5 and recorded["held_out_rows"] == 5
    assert recorded["sha256"] == hashlib.sha256((tmp_path / "good.npz").read_bytes()).hexdigest()
    assert recorded["checks"] and all(c["passed"] for c in recorded["checks"])


def test_openvino_int8_search_calibrates_on_the_data(tmp_path, monkeypatch):
    """NNCF's PTQ gets the data's calibration rows, not random ids, and candidates are held on its held-out rows."""
    pytest.importorskip("openvino", reason="needs the openvino extra (pip install 'attnkit[openvino]')")
    import attnkit
    from attnkit.core.data import load_data
    from attnkit.exporters import openvino_int8, openvino_nncf

    exp = attnkit.export("encoder-tiny", tmp_path / "exp", formats="onnx,openvino", check=False)
    spec = exp.manifest.spec
    tokens = np.random.default_rng(2).integers(1, spec.inputs[0].high, size=(12, 16)).astype("int32")
    np.savez(tmp_path / "d.npz", token_ids=tokens, padding_mask=np.ones_like(tokens))
    data = load_data(tmp_path / "d.npz", spec)
    seen, judged = [], []

    def ptq(fp32_model, calibration, *args, **kwargs):
        seen.append(calibration)
        raise RuntimeError("stopped by the test")

    real_run = openvino_nncf.run
    monkeypatch.setattr(openvino_nncf, "ptq", ptq)
    monkeypatch.setattr(openvino_nncf, "run", lambda c, feeds: judged.append(feeds) or real_run(c, feeds))
    choice = openvino_int8.choose(exp.out / "openvino" / "model.xml", spec, frozenset(), force=True,
                                  timer=lambda call: (call(), 1.0)[1], data=data)  # fmt: skip
    assert choice.name == openvino_int8.WEIGHT_ONLY and seen
    for calibration in seen:
        np.testing.assert_array_equal(np.concatenate([b["token_ids"] for b in calibration]), tokens[:6])
    held = tokens[6:]
    assert any(f["token_ids"].shape == held.shape and (f["token_ids"] == held).all() for f in judged)
    assert choice.calibrated_on == "data" and "calibrated_on" not in choice.record()  # weight-only: no calibration
    choice.name = openvino_int8.PTQ_BF16  # a calibrated scheme records what calibrated it, and warns without data
    assert choice.record()["calibrated_on"] == "data"
    assert "--data" in openvino_int8.random_calibration_note(choice.name)
    assert openvino_int8.random_calibration_note(openvino_int8.WEIGHT_ONLY) is None


def test_bench_data_gates_the_pick(lm_export, tmp_path, monkeypatch):
    """bench --data checks every measured backend x precision on the held-out rows; a row that does not keep the
    target share of fp32's task metric disagrees, and the pick never takes it."""
    from attnkit.benchmark.harness import StoppingRule
    from attnkit.checks import task
    from attnkit.orchestration.resolve import bench

    path = tmp_path / "data.npz"
    np.savez(path, token_ids=_tokens(20, 16, seed=8))
    rule = StoppingRule(0.0, 3, 0.05)
    report = bench(str(lm_export.out), backends=["onnxruntime"], precisions=("fp32", "int8"), batch_sizes="2",
                   seq_lens="16", rule=rule, calibrate=False, data=str(path))  # fmt: skip
    assert report.config["data"]["held_out_rows"] == 10 and report.config["data"]["fp32_eager"]["output"] == "logits"
    rows = {(m.backend, m.precision): m for m in report.measurements}
    for key in (("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        checked = rows[key].agreement["data"]
        assert checked["rows"] == 10 and checked["metrics"]["top1_agreement"] is not None
        assert checked["passed"] or not rows[key].agrees  # a row that fails on the data never agrees

    real = task.check_data

    def int8_fails(*args, **kwargs):
        base, checks = real(*args, **kwargs)
        for c in checks:
            if c.precision == "int8":
                c.passed, c.verdict = False, "top1 agreement 90.00% of fp32's (0.9000 / 1.0000) < 99%"
        return base, checks

    monkeypatch.setattr(task, "check_data", int8_fails)
    report = bench(str(lm_export.out), backends=["onnxruntime"], precisions=("fp32", "int8"), batch_sizes="2",
                   seq_lens="16", rule=rule, calibrate=False, data=str(path))  # fmt: skip
    int8 = next(m for m in report.measurements if m.precision == "int8")
    assert not int8.agrees and int8.agreement["failures"][-1].startswith("on your data: top1 agreement 90.00%")
    assert all(p is None or p["precision"] != "int8" for p in report.pick().values())
    assert any("on your data" in w for w in report.warnings())


def test_generation_on_the_datas_prompts(tmp_path):
    """verify --generate --data: the prompts are the first held-out rows (cut to what the positions allow beside
    the new tokens); each check reports the share of rows identical to the reference to the end and the tokens
    kept identical before the first divergence (fp32: all of them)."""
    import keras

    import attnkit
    from attnkit.checks.agreement import verify
    from attnkit.models.presets import _BASE
    from attnkit.models.transformer import build_decoder_lm

    keras.utils.set_random_seed(3)
    cfg = {**_BASE, "vocab_size": VOCAB, "max_length": 40, "num_layers": 1, "d_model": 32, "num_heads": 2,
           "ffn_dim": 64, "activation": "gelu"}  # fmt: skip
    build_decoder_lm(cfg, name="tinylm").save(tmp_path / "tiny.keras")
    exp = attnkit.export(str(tmp_path / "tiny.keras"), tmp_path / "exp", formats="onnx", generate=True, check=False)
    tokens = _tokens(12, 36, seed=4)
    np.savez(tmp_path / "d.npz", token_ids=tokens, padding_mask=np.ones_like(tokens))
    report = verify(exp.out, backends=["onnxruntime"], data=tmp_path / "d.npz",
                    generation={"max_new_tokens": 8})  # fmt: skip
    g = report.generation
    assert (
        g.batch == 6 and g.prompt_lengths == [32] * 6
    )  # held-out rows 6..11, cut to 40 - 8 positions (a .keras file with 40 positions: verify once drew 3 x 45 for it)
    first = {c.label: c for c in g.checks}["onnxruntime"]
    assert first.passed and first.sequences_identical == 1.0 and first.identical_prefix == 8.0
    assert report.data["held_out_rows"] == 6 and report.ok
    # bench-generate takes the same prompts; a batch larger than the held-out rows is refused, naming --data
    from attnkit.generation.bench import bench_generation

    bench = bench_generation(exp.out, backends=["onnxruntime"], batches=(2,), new_tokens=(4,), repeats=1,
                             data=tmp_path / "d.npz")  # fmt: skip
    assert {(r.batch, r.prompt_length) for r in bench.rows} == {(2, 36)}  # 36 fit beside 4 new tokens
    assert bench.notes[0].startswith("prompts: the first")
    with pytest.raises(AttnkitError, match="6 held-out rows; batch 8"):
        bench_generation(exp.out, backends=["onnxruntime"], batches=(8,), new_tokens=(4,), data=tmp_path / "d.npz")


def test_a_model_trained_here_keeps_its_accuracy_in_int8(tmp_path):
    """A trained fixture from what every machine has (scripts/train_byte_lm.py: attnkit's decoder on the standard
    library's bytes, 300 seeded steps, about 10 s): it learned (next-byte accuracy on held-out files far above a
    random model's), and its int8 ONNX keeps MLPerf's 99 % of that on 236 held-out windows (7,316 positions, so
    one percent is some 20 answers: a few flipped near-ties cannot decide it)."""
    import sys
    from pathlib import Path

    import attnkit
    from attnkit.checks.agreement import verify

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import train_byte_lm

    config = {**train_byte_lm.CONFIG, "num_layers": 1, "d_model": 64, "num_heads": 2, "ffn_dim": 128, "max_length": 64}
    model, _ = train_byte_lm.train(steps=300, config=config, seq=32, say=lambda _m: None)
    model.save(tmp_path / "bytes.keras")
    held = train_byte_lm.held_out(300, 32)
    np.savez(tmp_path / "held.npz", token_ids=held)
    exp = attnkit.export(str(tmp_path / "bytes.keras"), tmp_path / "exp", formats="onnx", precision="fp32,int8",
                         check=False)  # fmt: skip
    report = verify(exp.out, backends=["onnxruntime"], data=tmp_path / "held.npz")
    base = report.data_base
    assert base.next_token_accuracy > 0.3 and base.perplexity < 20  # learned (random: ~0.05, ~256)
    checks = {c.precision: c for c in report.data_checks}
    assert checks["int8"].verdict.startswith("next token accuracy")
    assert checks["int8"].metrics.next_token_accuracy / base.next_token_accuracy >= 0.99 and checks["int8"].passed
    assert checks["fp32"].metrics.top1_agreement == 1.0 and report.ok


def test_a_translator_trained_here_translates_its_held_out_numbers(tmp_path):
    """The seed scenario, a translation service (scripts/train_translator.py: attnkit's seq2seq model, English
    number words to French with num2words, 150 seeded steps, about 20 s): on numbers it never saw, its greedy
    translations from the data's own sources are the true French, every artifact keeps its token accuracy against
    the true labels, and its int8 ONNX takes a source and a target of different lengths (the export named both
    axes "sequence" until this fixture's data, and ONNX Runtime then reused one buffer for both)."""
    import sys
    from pathlib import Path

    import onnx

    import attnkit
    from attnkit.checks.agreement import verify

    pytest.importorskip("num2words", reason="num2words is not installed (pip install 'attnkit[fixtures]')")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import train_translator as tt

    model, _ = tt.train(steps=150, say=lambda _m: None)
    model.save(tmp_path / "translator.keras")
    numbers = tt.split(held_out=True)[:48]
    np.savez(tmp_path / "held.npz", **tt.encode(numbers))
    exp = attnkit.export(str(tmp_path / "translator.keras"), tmp_path / "exp", formats="onnx", precision="fp32,int8",
                         generate=True, check=False)  # fmt: skip
    int8 = onnx.load(str(exp.out / "model.int8.onnx"), load_external_data=False)
    dims = {i.name: i.type.tensor_type.shape.dim[1].dim_param for i in int8.graph.input}
    assert dims["encoder_token_ids"] != dims["decoder_token_ids"] == dims["decoder_padding_mask"]
    report = verify(exp.out, backends=["onnxruntime"], data=tmp_path / "held.npz",
                    generation={"max_new_tokens": 14})  # fmt: skip
    assert report.data_base.accuracy > 0.95  # against the true French tokens (random: ~1/62)
    checks = {c.precision: c for c in report.data_checks}
    assert checks["int8"].verdict.startswith("accuracy") and checks["int8"].passed and report.ok
    g = report.generation  # prompts: the held-out rows' sources, each translated from its start token
    assert g.source_lengths == tt.encode(numbers[24:32])["encoder_padding_mask"].sum(1).tolist()
    vocab = tt.vocabulary()
    right = [tt.join([vocab[t] for t in row[: row.index(tt.EOS)]]) == tt.pairs()[n][1]
             for row, n in zip(g.reference_tokens, numbers[24:32]) if tt.EOS in row]  # fmt: skip
    assert len(right) == 8 and np.mean(right) >= 0.75, right
    by = {(c.backend, c.precision): c for c in g.checks}
    assert by[("onnxruntime", "fp32")].token_match == 1.0
