"""Serving for real: Triton's own server (tritonserver 2.51 from nvidia-pytriton) loads the repository as
`attnkit package` wrote it (stand-in onnxruntime/tensorflow backends), answers over HTTP and gRPC like
onnxruntime on the same file, refuses broken configs; the TF Serving REST stand-in; load tests; failures.

Needs the serving venv (`make serving`, which `make test` builds first); the fixture builds it when it is
missing and skips with the reason only where it cannot be built.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_one_line_error, run

from attnkit.orchestration.package import package
from attnkit.serving.process import ServerError, group_members, http_json
from attnkit.serving.run import kserve_feeds, kserve_outputs

ATOL = 1e-5  # served vs onnxruntime on the same file


@pytest.fixture(scope="session")
def serving_env():
    from attnkit.serving.env import ServingEnvError, build

    try:
        return build()  # reuses the venv `make serving` built; builds it when missing
    except ServingEnvError as e:
        pytest.skip(f"the serving venv cannot be built here: {e}")


@pytest.fixture(scope="module")
def layouts(tiny_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    result = package(tiny_export.out, triton=root / "triton", tfserving=root / "tfserving")
    return root, result


@pytest.fixture(scope="module")
def triton(serving_env, layouts):
    from attnkit.serving.triton import TritonServer

    root, _ = layouts
    with TritonServer(root / "triton", env=serving_env) as server:
        server.start()
        yield server
    assert group_members(server.pid) == [], "processes of the server's group outlived stop()"
    assert not server.workdir.exists() and not server.log.exists(), "the server's work directory outlived it"


# before the first test that starts the module's `triton` server: Triton's Python backend directories of the
# servers below are removed only while no other tritonserver is alive (see python_env_litter)
def test_server_failures_are_one_line_with_the_servers_last_log_line(serving_env, layouts, tmp_path):
    from attnkit.serving.triton import TritonServer, python_env_dirs, tritonservers

    envs, others = python_env_dirs(), tritonservers()

    repo = tmp_path / "repo"
    repo.mkdir()
    src = layouts[0] / "triton"
    shutil.copytree(src / "encoder-tiny_onnx", repo / "encoder-tiny_onnx", copy_function=os.link)
    # a model that fails to load: the server exits, and the error names the model and Triton's reason
    (repo / "encoder-tiny_onnx" / "config.pbtxt").unlink()
    (repo / "encoder-tiny_onnx" / "config.pbtxt").write_text(
        (src / "encoder-tiny_onnx" / "config.pbtxt").read_text().replace("TYPE_INT32", "TYPE_INT64", 1)
    )
    import tempfile

    leftovers = set(Path(tempfile.gettempdir()).glob("attnkit-*"))
    server = TritonServer(repo, env=serving_env)
    with pytest.raises(ServerError) as e:
        server.start()
    message = str(e.value)
    assert "exited with code" in message and "its last log line" in message and "encoder-tiny_onnx" in message
    assert "TYPE_INT64" in message and "\n" not in message
    assert group_members(server.pid) == []
    # never ready within the time allowed: stopped, and said so
    shutil.copy2(src / "encoder-tiny_onnx" / "config.pbtxt", repo / "encoder-tiny_onnx" / "config.pbtxt")
    server = TritonServer(repo, env=serving_env)
    with pytest.raises(ServerError, match=r"was not ready after 0\.2 s; its last log line: "):
        server.start(timeout=0.2)
    assert group_members(server.pid) == []
    # a failed start, outside any `with`, leaves nothing in TMPDIR (its error already quotes the log)
    assert set(Path(tempfile.gettempdir()).glob("attnkit-*")) == leftovers
    # dies mid-test (SIGKILL to the server alone): the next call says so; stop() reaps the stub it left
    with TritonServer(repo, env=serving_env) as server:
        server.start()
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(10)
        with pytest.raises(ServerError, match=r"exited with code -9; its last log line: "):
            server.index()
    assert group_members(server.pid) == []
    # the Python backend's /tmp/python_env_* of the server stopped while loading and of the one killed: removed
    if not others and not tritonservers():
        assert python_env_dirs() == envs, "Triton's Python backend directories outlived the failed servers"


def onnx_session(layouts):
    from attnkit.runtimes.onnxruntime import session

    root, _ = layouts
    return session(root / "triton" / "encoder-tiny_onnx" / "1" / "model.onnx")


def padded_batch(rng, lengths, vocab=1000):
    """Rows of different real lengths, right-padded to the longest (padding_mask 0 beyond each length)."""
    seq = max(lengths)
    ids = rng.integers(1, vocab, (len(lengths), seq)).astype("int32")
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype("int32")
    return {"token_ids": ids * mask, "padding_mask": mask}


def kserve_body(feeds):
    return {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": "INT32", "data": a.ravel().tolist()}
            for n, a in feeds.items()
        ],
        "outputs": [{"name": "hidden_states"}],
    }


def test_every_model_of_the_repository_is_ready(triton, layouts):
    _, result = layouts
    index = {m["name"]: m for m in triton.index()}
    assert set(index) == {m["name"] for m in result.triton} == {"encoder-tiny_onnx", "encoder-tiny_savedmodel"}
    assert all(m["state"] == "READY" for m in index.values()), index
    status, config = http_json("GET", f"{triton.http_url}/v2/models/encoder-tiny_onnx/config")
    assert status == 200 and config["backend"] == "onnxruntime" and config["runtime"] == "model.py"  # the stand-in
    assert config["dynamic_batching"]["preferred_batch_size"] == [8, 32]  # the packaged config, parsed by Triton


def test_request_example_matches_onnxruntime_on_the_same_file(triton, layouts, tiny_export):
    root, result = layouts
    request = json.loads(Path(result.requests["triton"]).read_text())
    expected = onnx_session(layouts).run(["hidden_states"], kserve_feeds(request))[0]
    for model in ("encoder-tiny_onnx", "encoder-tiny_savedmodel"):
        status, answer = http_json("POST", f"{triton.http_url}/v2/models/{model}/infer", request)
        assert status == 200, answer
        served = kserve_outputs(answer)["hidden_states"]
        assert served.shape == expected.shape
        limit = ATOL if model.endswith("onnx") else 1e-4  # the SavedModel: TF vs onnxruntime kernels
        assert np.max(np.abs(served - expected)) <= limit, model


def test_padded_batches_of_two_shapes_over_http_and_grpc(triton, layouts, rng):
    import tritonclient.grpc as grpcclient

    sess = onnx_session(layouts)
    batches = [padded_batch(rng, [5, 9]), padded_batch(rng, [12, 16, 3])]
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    for feeds in batches:
        expected = sess.run(["hidden_states"], feeds)[0]
        status, answer = http_json("POST", f"{triton.http_url}/v2/models/encoder-tiny_onnx/infer", kserve_body(feeds))
        assert status == 200, answer
        assert np.max(np.abs(kserve_outputs(answer)["hidden_states"] - expected)) <= ATOL
        inputs = []
        for n, a in feeds.items():
            inputs.append(grpcclient.InferInput(n, list(a.shape), "INT32"))
            inputs[-1].set_data_from_numpy(a)
        served = client.infer("encoder-tiny_onnx", inputs).as_numpy("hidden_states")
        assert served.shape == expected.shape and np.max(np.abs(served - expected)) <= ATOL
    # both shapes in flight at once: the dynamic batcher may stack equal shapes only, and each answer is its own
    answers, errors = {}, []

    def send(i):
        feeds = batches[i % 2]
        status, answer = http_json("POST", f"{triton.http_url}/v2/models/encoder-tiny_onnx/infer", kserve_body(feeds))
        (answers.__setitem__(i, kserve_outputs(answer)["hidden_states"]) if status == 200 else errors.append(answer))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(answers) == 12
    for i, served in answers.items():
        assert np.max(np.abs(served - sess.run(["hidden_states"], batches[i % 2])[0])) <= ATOL


def _broken(repo: Path, src: str, name: str, edit) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    (repo / name).mkdir()
    shutil.copytree(repo / src / "1", repo / name / "1", copy_function=os.link)
    cfg = text_format.Parse((repo / src / "config.pbtxt").read_text(), mc.ModelConfig())
    cfg.name = name
    edit(cfg, mc)
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(cfg))


def test_broken_configs_are_refused_by_the_server(triton, layouts):
    repo = layouts[0] / "triton"

    def wrong_dtype(cfg, mc):
        cfg.input[0].data_type = mc.TYPE_FP32

    def wrong_dims(cfg, mc):
        del cfg.output[0].dims[:]
        cfg.output[0].dims.extend([-1, 64])

    def no_batch_dim(cfg, mc):  # max_batch_size 0 keeps the batch axis out of dims: the graph has one more
        cfg.max_batch_size = 0
        cfg.ClearField("dynamic_batching")
        cfg.ClearField("model_warmup")

    def unbatched_right(cfg, mc):  # the same without max_batch_size, dims spelled with the batch axis: valid
        no_batch_dim(cfg, mc)
        for io in list(cfg.input) + list(cfg.output):
            io.dims.insert(0, -1)

    cases = {
        "bad_dtype": (
            wrong_dtype,
            "configuration expects datatype TYPE_FP32 for input 'token_ids', model provides TYPE_INT32",
        ),
        "bad_dims": (wrong_dims, "tensor 'hidden_states': the model expects 3 dimensions (shape [-1,-1,128])"),
        "bad_batch": (
            no_batch_dim,
            "the model expects 2 dimensions (shape [-1,-1]) but the model configuration specifies 1",
        ),
    }
    for name, (edit, _) in cases.items():
        _broken(repo, "encoder-tiny_onnx", name, edit)
    _broken(repo, "encoder-tiny_onnx", "unbatched_ok", unbatched_right)
    try:
        for name, (_, message) in cases.items():
            with pytest.raises(ServerError) as e:
                triton.load(name)
            assert message in str(e.value), str(e.value)
            assert "\n" not in str(e.value)
        triton.load("unbatched_ok")
        feeds = padded_batch(np.random.default_rng(7), [4, 6])
        status, answer = http_json("POST", f"{triton.http_url}/v2/models/unbatched_ok/infer", kserve_body(feeds))
        assert status == 200, answer
        expected = onnx_session(layouts).run(["hidden_states"], feeds)[0]
        assert np.max(np.abs(kserve_outputs(answer)["hidden_states"] - expected)) <= ATOL
        # the SavedModel stand-in checks its signature the same way
        _broken(repo, "encoder-tiny_savedmodel", "bad_tf", wrong_dtype)
        with pytest.raises(ServerError, match="configuration expects datatype TYPE_FP32 for input 'token_ids'"):
            triton.load("bad_tf")
    finally:
        for name in [*cases, "unbatched_ok", "bad_tf"]:
            triton.unload(name)
            shutil.rmtree(repo / name, ignore_errors=True)
    assert {m["name"]: m["state"] for m in triton.index() if m["name"].startswith("encoder")} == {
        "encoder-tiny_onnx": "READY", "encoder-tiny_savedmodel": "READY"}  # fmt: skip


def test_load_test_sweep_measures_batching(triton, layouts):
    from attnkit.serving.loadtest import load_test

    _, result = layouts
    request = json.loads(Path(result.requests["triton"]).read_text())
    report = load_test(triton.http_url, "encoder-tiny_onnx", request, concurrency=(1, 8), warmup_s=0.3, window_s=1.0)
    one, eight = report.levels
    assert [lv.concurrency for lv in report.levels] == [1, 8] and report.errors == 0
    for lv in report.levels:
        assert lv.requests > 10 and lv.requests_per_s == pytest.approx(lv.requests / lv.window_s)
        assert lv.latency_ms["p50"] <= lv.latency_ms["p90"] <= lv.latency_ms["p99"]
    assert one.server_batch == pytest.approx(1.0)  # one request in flight: nothing to batch
    assert eight.server_batch > 1.0  # Triton's dynamic batcher stacked requests


def test_loadtest_cli_writes_table_json_csv_plot(triton, layouts, tmp_path):
    _, result = layouts
    out = tmp_path / "lt"
    code, output = run(
        "loadtest", "encoder-tiny_onnx", "--server", triton.http_url, "--request", result.requests["triton"],
        "--concurrency", "1,2", "--warmup", "0.2", "--min-seconds", "0.5", "--out", out,
    )  # fmt: skip
    assert code == 0, output
    assert "load test: encoder-tiny_onnx" in output and "p99" in output
    data = json.loads((out / "loadtest.json").read_text())
    assert [lv["concurrency"] for lv in data["runs"][0]["levels"]] == [1, 2]
    for lv in data["runs"][0]["levels"]:  # perf_analyzer's rule: windows until the last three agree, bounded
        assert 3 <= lv["windows"] <= 10 and len(lv["window_throughputs"]) == lv["windows"]
        lat = lv["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert 0 <= lat["stdev"] <= lat["max"] - lat["min"]  # a spread in ms, not a variance in ms^2
        if lv["stable"]:
            last = lv["window_throughputs"][-3:]
            assert (max(last) - min(last)) / (sum(last) / 3) <= data["runs"][0]["stability_pct"] / 100
    assert len((out / "loadtest.csv").read_text().strip().splitlines()) == 3
    assert (out / "loadtest.png").read_bytes()[:4] == b"\x89PNG"
    # gRPC, with a request built from the model's metadata (batch 2 x seq 16)
    code, output = run(
        "loadtest", "encoder-tiny_savedmodel", "--server", f"grpc://{triton.grpc_url}", "--concurrency", "2",
        "--warmup", "0.2", "--min-seconds", "0.5", "--batch-size", "2", "--seq-len", "16",
    )  # fmt: skip
    assert code == 0, output
    assert "token_ids [2, 16]" in output.replace("\n", " ").replace("  ", " ")


def test_loadtest_bad_input_is_one_line(triton, tmp_path):
    assert_one_line_error(*run("loadtest", "m", "--server", "http://10.1.2.3:8000"), "--server", "127.0.0.1 only")
    assert_one_line_error(*run("loadtest", "m", "--server", "ftp://127.0.0.1:1"), "--server", "scheme")
    assert_one_line_error(*run("loadtest", "encoder-tiny", "--request", tmp_path / "r.json"), "--server")
    (tmp_path / "r.json").write_text('{"inputs": []}')
    assert_one_line_error(
        *run("loadtest", "m", "--server", triton.http_url, "--request", tmp_path / "r.json"), "--request"
    )
    assert_one_line_error(*run("loadtest", "nope", "--server", triton.http_url), "--server", "nope")
    assert_one_line_error(*run("loadtest", "m", "--server", triton.http_url, "--min-seconds", "inf"), "--min-seconds")
    assert_one_line_error(*run("loadtest", "m", "--server", triton.http_url, "--concurrency", "0"), "--concurrency")
    assert_one_line_error(*run("loadtest", "m", "--server", triton.http_url, "--max-windows", "2"), "--max-windows")
    # a shape option the command cannot use is refused, not silently dropped (it was, as bench --server)
    assert_one_line_error(*run("loadtest", "m", "--server", triton.http_url, "--batch-sizes", "1,8"), "--batch-sizes")
    from attnkit.serving.process import free_port

    assert_one_line_error(
        *run("loadtest", "m", "--server", f"http://127.0.0.1:{free_port()}"), "--server", "nothing answers"
    )


def test_old_bench_server_spelling_runs_loadtest_and_says_so(tmp_path):
    code, output = run("bench", "m", "--server", "http://10.1.2.3:8000")
    assert_one_line_error(code, output, "--server", "127.0.0.1 only")  # loadtest's own check ran
    assert "`attnkit bench --server` is `attnkit loadtest` now" in output


def test_served_load_tests_batching_on_and_off(serving_env, layouts):
    from attnkit.orchestration.report import _served_section
    from attnkit.serving.run import serve_load_tests

    root, result = layouts
    served = serve_load_tests(root, result, concurrency=(1, 4), warmup_s=0.2, window_s=0.6)
    assert served.max_abs_diff <= ATOL
    on, off = served.reports
    assert (on.label, off.label) == ("dynamic batching on", "dynamic batching off")
    assert on.errors == off.errors == 0
    assert all(lv.server_batch == pytest.approx(1.0) for lv in off.levels)  # no batcher: one request per execution
    assert on.levels[-1].server_batch > 1.0
    text = _served_section(served)
    assert "dynamic batching on" in text and "| 4 |" in text
    # the packaged config was not touched by the scratch repository's unbatched copy
    assert "dynamic_batching" in (root / "triton" / "encoder-tiny_onnx" / "config.pbtxt").read_text()


def test_tfserving_standin_serves_the_layout(tiny_export, layouts, tmp_path):
    from attnkit.serving.tfserving import SERVER_HEADER, TFServingStandIn

    root, result = layouts
    tfs = root / "tfserving"
    package(tiny_export.out, tfserving=tfs, version=2)  # the highest version is served
    request = json.loads(Path(result.requests["tfserving"]).read_text())
    feeds = {n: np.asarray(v, "int32") for n, v in request["inputs"].items()}
    expected = onnx_session(layouts).run(["hidden_states"], feeds)[0]
    with TFServingStandIn(tfs) as server:
        server.start()
        url = f"{server.url}/v1/models/encoder-tiny"
        status, body = http_json("GET", url)
        assert status == 200 and body["model_version_status"] == [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]  # fmt: skip
        status, meta = http_json("GET", f"{url}/metadata")
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert status == 200 and sig["inputs"]["token_ids"]["dtype"] == "DT_INT32"
        assert sig["outputs"]["hidden_states"]["tensor_shape"]["dim"][-1]["size"] == "128"
        status, body = http_json("POST", f"{url}:predict", request)  # the package's columnar example
        assert status == 200 and np.max(np.abs(np.asarray(body["outputs"]) - expected)) <= 1e-4
        rows = padded_batch(np.random.default_rng(3), [7, 4])
        instances = [{n: a[i].tolist() for n, a in rows.items()} for i in range(2)]
        status, body = http_json("POST", f"{url}/versions/2:predict", {"instances": instances})
        want = onnx_session(layouts).run(["hidden_states"], rows)[0]
        assert status == 200 and np.max(np.abs(np.asarray(body["predictions"]) - want)) <= 1e-4
        import urllib.request

        with urllib.request.urlopen(url) as r:
            assert r.headers["Server"].startswith(SERVER_HEADER)  # labelled a stand-in on every answer
        for bad, needle in (
            ({"instances": [{"token_ids": [1, 2]}, {"token_ids": [1, 2, 3]}]}, "'instances'"),
            ({"inputs": {"token_ids": [[1.5]], "padding_mask": [[1]]}}, "non-integer"),
            ({"inputs": {"token_ids": [1, 2], "padding_mask": [1, 1]}}, "shape"),
            ({"signature_name": "nope", "inputs": {}}, "nope"),
            ({}, "Missing 'inputs' or 'instances'"),
        ):
            status, body = http_json("POST", f"{url}:predict", bad)
            assert status == 400 and needle in body["error"], (bad, body)
        assert http_json("POST", f"{server.url}/v1/models/other:predict", request)[0] == 404
        assert http_json("GET", f"{url}/versions/1")[0] == 404  # only the highest version is loaded
        pid = server.pid
    assert group_members(pid) == []


def test_serve_commands_refuse_bad_input(tmp_path):
    assert_one_line_error(*run("serve", "triton", tmp_path / "none"), "REPOSITORY")
    assert_one_line_error(*run("serve", "tfserving", tmp_path), "DIRECTORY", "saved_model.pb")
    assert_one_line_error(*run("serve", "triton", tmp_path, "--venv", tmp_path / "v"), "REPOSITORY", "no model")
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text('name: "m"\n')
    repo = tmp_path / "repo"
    assert_one_line_error(*run("serve", "triton", repo, "--venv", tmp_path / "v"), "--venv", "make serving")


def test_standin_config_checks_follow_tritons_rules():
    sys.path.insert(0, str(Path(__file__).parents[1] / "attnkit" / "serving" / "backends"))
    try:
        from attnkit_standin import ConfigMismatch, Tensor, check_config
    finally:
        sys.path.pop(0)
    model_in = [Tensor("x", "TYPE_FP32", (-1, -1, 8))]
    model_out = [Tensor("y", "TYPE_FP32", (-1, -1, 4))]

    def cfg(mbs, in_dims, out_dims, dtype="TYPE_FP32"):
        return {"name": "m", "max_batch_size": mbs, "input": [{"name": "x", "data_type": dtype, "dims": in_dims}],
                "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": out_dims}]}  # fmt: skip

    check_config(cfg(8, [-1, 8], [-1, 4]), model_in, model_out)  # batched
    check_config(cfg(0, [-1, -1, 8], [-1, -1, 4]), model_in, model_out)  # unbatched, batch axis in dims
    check_config(cfg(8, [5, 8], [-1, 4]), model_in, model_out)  # inputs: a fixed dim where the model has -1 is fine
    for bad, needle in (
        (cfg(8, [-1, 8], [7, 4]), "tensor 'y': the model expects 3 dimensions"),  # outputs compare exactly
        (cfg(0, [-1, 8], [-1, -1, 4]), "specifies 2 dimensions (shape [-1,8])"),
        (cfg(8, [-1, 8], [-1, 4], "TYPE_FP16"), "configuration expects datatype TYPE_FP16 for input 'x'"),
        ({**cfg(8, [-1, 8], [-1, 4]), "output": [{"name": "z", "data_type": "TYPE_FP32", "dims": [-1, 4]}]},
         "unexpected inference output 'z', allowed outputs are: y"),
    ):  # fmt: skip
        with pytest.raises(ConfigMismatch, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            check_config(bad, model_in, model_out)
    with pytest.raises(ConfigMismatch, match="first dimension must be -1"):
        check_config(cfg(8, [8], [4]), [Tensor("x", "TYPE_FP32", (2, 8))], [Tensor("y", "TYPE_FP32", (2, 4))])


def test_openvino_ir_served_by_the_openvino_standin(serving_env, tmp_path):
    """The OpenVINO IR packaged as Triton's OpenVINO backend reads it (backend: "openvino", model.xml + .bin in
    the version directory), loaded by tritonserver through the stand-in, answers as OpenVINO itself does with the
    same properties (the backend forces no precision; HINT_BF16 asks for bf16)."""
    pytest.importorskip("openvino", reason="needs the openvino extra (pip install 'attnkit[openvino]')")
    import openvino as ov

    import attnkit
    from attnkit.serving.triton import TritonServer

    exported = attnkit.export("encoder-tiny", tmp_path / "ov", formats="onnx,openvino", precision="fp32,bf16,fp16,int8",
                              check=False)  # fmt: skip
    result = package(exported.out, triton=tmp_path / "repo")
    names = {m["name"]: m for m in result.triton}
    assert names["encoder-tiny_openvino"]["platform"] == "openvino"
    # Triton's OpenVINO backend cannot ask for f16: no fp16 OpenVINO model is packaged under that name
    assert "encoder-tiny_openvino_fp16" not in names and "encoder-tiny_openvino_int8" in names
    assert sorted(p.name for p in (tmp_path / "repo" / "encoder-tiny_openvino" / "1").iterdir()) == [
        "model.bin", "model.xml"]  # fmt: skip
    assert 'key: "HINT_BF16"' in (tmp_path / "repo" / "encoder-tiny_openvino_bf16" / "config.pbtxt").read_text()
    request = json.loads(Path(result.requests["triton"]).read_text())
    feeds = kserve_feeds(request)
    models = ("encoder-tiny_openvino", "encoder-tiny_openvino_bf16", "encoder-tiny_openvino_int8")
    with TritonServer(tmp_path / "repo", models=models, env=serving_env) as server:
        server.start()
        for model, ir, props in (("encoder-tiny_openvino", "openvino", {}),
                                 ("encoder-tiny_openvino_bf16", "openvino", {"INFERENCE_PRECISION_HINT": "bf16"}),
                                 ("encoder-tiny_openvino_int8", "openvino_int8", {})):  # fmt: skip
            status, answer = http_json("POST", f"{server.http_url}/v2/models/{model}/infer", request)
            assert status == 200, answer
            compiled = ov.Core().compile_model(str(exported.out / ir / "model.xml"), "CPU",
                                               {"PERFORMANCE_HINT": "LATENCY", **props})  # fmt: skip
            expected = compiled(feeds)[compiled.output("hidden_states")]
            assert np.max(np.abs(kserve_outputs(answer)["hidden_states"] - expected)) <= ATOL, model


def test_python_env_litter_is_taken_only_when_no_other_tritonserver_lives(tmp_path, monkeypatch):
    """The rule stop() removes Triton's Python backend directories by: new since the launch, and no tritonserver
    alive (a live one may have made any of them); never the ones there before."""
    from attnkit.serving import triton

    monkeypatch.setattr(triton, "PYTHON_ENV_DIR", tmp_path)
    old = tmp_path / "python_env_old"
    old.mkdir()
    before = triton.python_env_dirs()
    new = tmp_path / "python_env_new"
    new.mkdir()
    (tmp_path / "other_dir").mkdir()
    monkeypatch.setattr(triton, "tritonservers", lambda: [4242])
    assert triton.python_env_litter(before) == set()
    monkeypatch.setattr(triton, "tritonservers", lambda: [])
    assert triton.python_env_litter(before) == {new}


def test_serve_triton_refuses_a_directory_it_would_serve_nothing_from(tiny_export, tmp_path, monkeypatch):
    import tempfile

    from attnkit.core.errors import AttnkitError
    from attnkit.serving.triton import check_repository

    (tmp_path / "empty").mkdir()
    with pytest.raises(AttnkitError, match="repository: .*no model configuration"):
        check_repository(tmp_path / "empty")
    with pytest.raises(AttnkitError, match="repository: .*export directory.*attnkit package"):
        check_repository(tiny_export.out)
    # a temporary directory of its own: another test worker's files in /tmp are not this command's
    private = tmp_path / "tmpdir"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    code, output = run("serve", "triton", tmp_path / "empty")
    assert code != 0 and "no model configuration" in output
    assert list(private.iterdir()) == []  # nothing left in TMPDIR


def test_kserve_and_job_manifests_pass_the_official_models_and_break_on_errors(serving_env, tiny_export, tmp_path):
    """package --kserve and bench --plan write manifests that KServe's and Kubernetes' own Python models accept
    (attnkit.serving.kube_check in the serving venv); the same check names a misspelled field, a value of the
    wrong type and requests that differ from limits."""
    import yaml

    from attnkit.serving.manifests import validate

    repo = tmp_path / "repo"
    code, out = run("package", str(tiny_export.out), "--triton", str(repo), "--kserve", "s3://models/tiny")
    assert code == 0 and "checked against KServe's and Kubernetes' models" in out, out
    isvc = repo / "inferenceservice.yaml"
    code, out = run("bench", "encoder-tiny", "--batch-sizes", "1,8", "--seq-lens", "32,64,128", "--plan",
                    str(tmp_path / "job.yaml"), "--threads", "2")  # fmt: skip
    assert code == 0, out
    job = tmp_path / "job.yaml"
    assert validate([isvc, job], serving_env) == {str(isvc): [], str(job): []}
    doc = yaml.safe_load(job.read_text())
    assert doc["spec"]["completionMode"] == "Indexed" and doc["spec"]["completions"] == 6

    broken = yaml.safe_load(isvc.read_text())
    model = broken["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")  # a misspelled key
    model["resources"]["limits"]["cpu"] = "4"  # limits above requests
    (tmp_path / "bad-isvc.yaml").write_text(yaml.safe_dump(broken))
    bad_job = yaml.safe_load(job.read_text())
    bad_job["spec"]["completions"] = "six"  # a string where the schema has an int
    del bad_job["spec"]["template"]["spec"]["containers"]  # a required field
    (tmp_path / "bad-job.yaml").write_text(yaml.safe_dump(bad_job))
    problems = validate([tmp_path / "bad-isvc.yaml", tmp_path / "bad-job.yaml"], serving_env)
    isvc_problems, job_problems = problems[str(tmp_path / "bad-isvc.yaml")], problems[str(tmp_path / "bad-job.yaml")]
    assert any("storageURI" in p and "schema" in p for p in isvc_problems), isvc_problems
    assert any("requests" in p and "limits" in p for p in isvc_problems), isvc_problems
    assert any("completions" in p and "int" in p for p in job_problems), job_problems
    assert any("containers" in p for p in job_problems), job_problems


def test_tune_searches_on_the_real_server_writes_only_a_confirmed_winner_and_keeps_the_packaged(
    serving_env, layouts, tmp_path, monkeypatch
):
    """attnkit.serving.tune on Triton: the packaged configuration is measured first; a configuration Triton refuses
    is reported with Triton's own line and never written; a winner is written only past MIN_GAIN (forced to 0 here,
    and the candidate scored higher, so that one is), the packaged config kept as configs/packaged.pbtxt, the written one parsed by Triton's schema,
    loaded from disk by the server and answering exactly as the packaged one did."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from attnkit.serving import tune as tuning

    root, result = layouts
    repo = tmp_path / "repo"
    shutil.copytree(root / "triton", repo, symlinks=True)
    model = next(m["name"] for m in result.triton if m["platform"] == "onnxruntime_onnx")
    packaged_text = (repo / model / "config.pbtxt").read_text()
    refused = tuning.Candidate(1, 0, 100)  # dynamic batching with the batch axis left out of dims
    monkeypatch.setattr(tuning, "coarse", lambda packaged: [refused, tuning.Candidate(2, 8, 0)])
    monkeypatch.setattr(tuning, "refine", lambda best, seen: [])
    monkeypatch.setattr(tuning, "MIN_GAIN", 0.0)
    winner = tuning.Candidate(2, 8, 0)

    def winner_scored_higher(point, load_report, budget):
        """Which configuration wins, and whether a level is stable, is this machine's noise (under a busy CI run
        no level may be): every measured level counts here, and the candidate wins; the rest is real."""
        for lv in load_report.levels:
            point.levels.append({"concurrency": lv.concurrency, "inferences_per_s": lv.inferences_per_s,
                                 "p99_ms": lv.latency_ms.get("p99"), "stable": lv.stable, "errors": lv.errors})  # fmt: skip
        top = max(load_report.levels, key=lambda lv: lv.inferences_per_s)
        scale = 1.0 if point.candidate == winner else 0.01
        point.inferences_per_s, point.p99_ms, point.concurrency = (
            top.inferences_per_s * scale,
            top.latency_ms.get("p99"),
            top.concurrency,
        )

    monkeypatch.setattr(tuning, "_score", winner_scored_higher)
    report = tuning.tune(repo, model, latency_budget_ms=10_000, time_budget_s=900, levels=(1, 4), warmup_s=0.2,
                         window_s=0.3, env=serving_env)  # fmt: skip
    roles = [p.role for p in report.points]
    assert roles[0] == "packaged" and "confirm" in roles
    bad = next(p for p in report.points if p.candidate == refused)
    assert bad.status == "refused" and "refused to load" in bad.error and "dimensions" in bad.error
    assert all(p.levels and p.inferences_per_s for p in report.points if p.status == "ok")
    assert report.best.candidate == winner and report.written
    assert (repo / model / "configs" / "packaged.pbtxt").read_text() == packaged_text
    written = text_format.Parse((repo / model / "config.pbtxt").read_text(), mc.ModelConfig())
    assert written.instance_group[0].count == 2 and written.max_batch_size == 8
    assert written.dynamic_batching.max_queue_delay_microseconds == 0
    assert report.answers_identical is True
    assert written.max_batch_size != 0  # the refused candidate was never written


def test_tune_bad_input_is_one_line(layouts, tmp_path):
    root, _ = layouts
    code, out = run("tune", root / "triton", "--model", "nope", "--latency-budget", "10")
    assert_one_line_error(code, out, "--model", "encoder-tiny_onnx")
    code, out = run("tune", root / "triton", "--model", "encoder-tiny_onnx", "--latency-budget", "-1")
    assert_one_line_error(code, out, "--latency-budget")
    code, out = run("tune", root / "triton", "--model", "encoder-tiny_onnx", "--latency-budget", "5",
                    "--concurrency", "0,2")  # fmt: skip
    assert_one_line_error(code, out, "--concurrency")


def test_tune_counts_only_stable_error_free_levels_within_the_budget():
    """A point's score is its best level that is stable, error-free and within the p99 budget; none: over budget."""
    from types import SimpleNamespace as NS

    from attnkit.serving import tune as tuning

    def level(c, ips, p99, stable=True, errors=0):
        return NS(concurrency=c, inferences_per_s=ips, latency_ms={"p99": p99}, stable=stable, errors=errors)

    point = tuning.Point(tuning.Candidate(1, 8, 0), "coarse")
    levels = [level(1, 10, 20), level(4, 30, 90), level(8, 50, 80, stable=False), level(16, 60, 99, errors=2),
              level(32, 70, 400)]  # fmt: skip
    tuning._score(point, NS(levels=levels), 100.0)
    assert (point.status, point.inferences_per_s, point.concurrency) == ("ok", 30, 4)
    assert len(point.levels) == 5
    late = tuning.Point(tuning.Candidate(1, 8, 0), "coarse")
    tuning._score(late, NS(levels=[level(1, 10, 150), level(4, 30, 90, stable=False)]), 100.0)
    assert late.status == "over budget" and late.inferences_per_s is None
