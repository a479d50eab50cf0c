"""Time one peer's greedy decode of a Hugging Face checkpoint, the way its own users run it (issue 36).

Runs in the peers' venv (``make peers``: ``scripts/peers/requirements.txt``, pinned; torch, transformers,
optimum-intel, OpenVINO GenAI, onnxruntime-genai, llama.cpp), never in attnkit's: the peers are what a user
of the same architecture would pick instead of attnkit, so each is driven through its own public API and
its own exporter, with its defaults unless a precision is asked for. ``scripts/decode_peers.py`` (attnkit's
venv) exports the checkpoint from a keras-hub ``.keras`` file (keras-hub's own ``export_to_transformers``: the
same weights), prepares each peer's artifact with :func:`prepare` and calls this script once per peer and
precision, in the same run as attnkit's rows.

    decode_peer.py PEER --model HF_DIR --work DIR --prompts prompts.npy --new-tokens 128 --repeats 3 \
        [--precision default|f32|f16|bf16|q8] --out result.json

Every peer gets the same prompts (``prompts.npy``: int64 (batch, prompt_length)), generates exactly
``--new-tokens`` tokens greedily (end-of-sequence ignored), one untimed warm-up, then ``--repeats`` timed
generations; tokens/s is batch x new tokens over the median wall time of a whole ``generate`` call (prefill
included: attnkit's ``bench-generate`` counts the same). The result records the precision the peer really ran
in (OpenVINO: the compiled model's ``INFERENCE_PRECISION_HINT`` and ``KV_CACHE_PRECISION``) and its tokens,
which the orchestrator compares with the transformers fp32 reference.

``--huge-pages``: the peer's weights on 2 MiB pages, as attnkit's runners load theirs (attnkit.core.hugepages),
the way a user of the peer would get them: glibc's ``glibc.malloc.hugetlb=1`` tunable in the environment the
process starts with (the orchestrator sets it; refused here without it) and, for llama.cpp, its weights read into
memory (``use_mmap=False``) rather than mapped from the GGUF file's 4 KiB page-cache pages. The result records
the process's ``AnonHugePages`` either way, so a row says what it really ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PEERS = ("transformers", "optimum-intel", "openvino-genai", "onnxruntime-genai", "llama.cpp")


#: set by ``--huge-pages`` (see the module docstring)
HUGE_PAGES = False
TUNABLE = "glibc.malloc.hugetlb=1"


def _anon_huge_mib() -> float:
    with open("/proc/self/smaps_rollup") as f:
        return int(f.read().split("AnonHugePages:")[1].split()[0]) / 1024


def _threads() -> int:
    return int(os.environ.get("PEER_THREADS", os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------------------
# artifacts, made by each peer's own exporter


def prepare(peer: str, model: Path, work: Path, precision: str) -> Path:
    """The peer's artifact of ``model`` under ``work`` (made once, reused): optimum-cli's stateful OpenVINO IR
    (also what OpenVINO GenAI runs), onnxruntime-genai's model builder output, llama.cpp's GGUF."""
    if peer in ("transformers",):
        return model
    if peer in ("optimum-intel", "openvino-genai"):
        # fp32 weights in the IR, the precision the compile-time hint (run()); f16: the IR optimum-cli writes with
        # `--weight-format fp16` (what an OpenVINO user picks to halve a decode's bytes), at the plugin's defaults
        # q8: `--weight-format int8` (NNCF's 8-bit weight compression, optimum-cli's default above 1 B parameters)
        weights = {"f16": "fp16", "q8": "int8"}.get(precision, "fp32")
        out = work / ("optimum-openvino" if weights == "fp32" else f"optimum-openvino-{weights}")
        if not (out / "openvino_model.xml").exists():
            cmd = [sys.executable, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(model),
                   "--task", "text-generation-with-past", "--weight-format", weights, str(out)]  # fmt: skip
            try:
                _run(cmd)
            except SystemExit as e:
                # optimum-intel 2.2 caps some families below the venv's transformers (Gemma, Gemma 3: "Maximum
                # required is 5.0"); their users export with that transformers, which `make peers` keeps beside
                # the venv (--target, first on the path for this one command)
                cap = re.search(r"Maximum required is ([0-9.]+)", str(e))
                older = Path(sys.prefix) / f"transformers-{cap.group(1)}" if cap else None
                if older is None or not older.is_dir():
                    raise
                _run(cmd, env={**os.environ, "PYTHONPATH": str(older)})
        return out
    if peer == "onnxruntime-genai":
        out = work / f"ortgenai-{precision}"
        if not (out / "genai_config.json").exists():
            p = "fp32" if precision in ("default", "f32") else precision
            build = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-o", str(out), "-p", p, "-e", "cpu",
                     "-c", str(work / "ortgenai-cache"), "-i"]  # fmt: skip
            try:
                _run(build + [str(model)])
            except SystemExit as e:
                # the builder saves the model's tokenizer too; with none beside it (keras-hub's exporter writes none
                # for a model built without one) transformers' Mistral class tries to convert a slow one and fails;
                # the stub vocabulary llama.cpp gets (never read: the peers are fed token ids) gives it one
                if "tokenizer" not in str(e):
                    raise
                _run(build + [str(_with_stub_vocabulary(model, work / "gguf-source"))])
        return out
    if peer == "llama.cpp":
        outtype = {"default": "f32", "q8": "q8_0"}.get(precision, precision)  # q8: llama.cpp's own 8-bit blocks
        out = work / f"model-{outtype}.gguf"
        if not out.exists():
            source = _with_stub_vocabulary(model, work / "gguf-source")
            _run(
                [sys.executable, str(_llama_cpp_converter()), str(source), "--outtype", outtype, "--outfile", str(out)]
            )
        return out
    raise SystemExit(f"unknown peer {peer!r}; one of {', '.join(PEERS)}")


def _with_stub_vocabulary(model: Path, out: Path) -> Path:
    """``model``'s files beside a small SentencePiece vocabulary, for llama.cpp's converter, which needs one to
    write a GGUF (keras-hub's exporter writes none for a model built without a tokenizer). The peers are fed
    token ids, never text, and the converter pads the vocabulary to the model's ``vocab_size`` with its own
    placeholder tokens, so the stub's content never reaches a decode: trained here on one standard-library file."""
    if (out / "tokenizer.model").exists():
        return out
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        if not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    spm.SentencePieceTrainer.train(input=str(Path(os.__file__).parent / "argparse.py"), vocab_size=500,
                                   model_type="bpe", model_prefix=str(out / "tokenizer"), minloglevel=2)  # fmt: skip
    return out


def _llama_cpp_converter() -> Path:
    """llama.cpp's own ``convert_hf_to_gguf.py``, vendored in the llama-cpp-python source the venv built."""
    here = Path(os.environ.get("LLAMA_CPP_SOURCE", Path(sys.prefix) / "src" / "llama.cpp"))
    candidate = here / "convert_hf_to_gguf.py"
    if not candidate.exists():
        raise SystemExit(f"no {candidate}: make peers unpacks llama.cpp's source there (or set LLAMA_CPP_SOURCE)")
    return candidate


def _run(cmd: list[str], env: dict | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed: {' | '.join(tail)}")


# ---------------------------------------------------------------------------------------------------------
# generation


def _openvino_config(precision: str) -> dict:
    """optimum-intel's and GenAI's default is {PERFORMANCE_HINT: LATENCY} with the plugin's own precision (bf16
    where the CPU has it, a u8 KV cache); ``f32`` pins f32 compute and an f32 cache, as attnkit's fp32 rows do."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _threads()}
    if precision == "f32":
        config.update(INFERENCE_PRECISION_HINT="f32", KV_CACHE_PRECISION="f32", DYNAMIC_QUANTIZATION_GROUP_SIZE=0)
    return config


def _ran_as(compiled, precision: str = "default") -> str:
    """What the plugin computes and caches in, asked of the compiled model; an f16-weight IR says so first."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    kv = compiled.get_property("KV_CACHE_PRECISION").get_type_name()
    ran = hint if kv == hint else f"{hint} (kv-cache {kv})"
    weights = {"f16": "f16", "q8": "int8"}.get(precision)
    return f"{weights} weights, {ran}" if weights else ran


class Peer:
    """``generate(prompts) -> new tokens (batch, n)``; ``ran_as``: the precision it ran in."""

    ran_as = "fp32"

    def generate(self, prompts: np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError


class Transformers(Peer):
    def __init__(self, path: Path, precision: str):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(_threads())
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def generate(self, prompts, n):
        ids = self.torch.from_numpy(prompts)
        with self.torch.inference_mode():
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=n,
                                      min_new_tokens=n, do_sample=False, pad_token_id=0)  # fmt: skip
        return out[:, prompts.shape[1] :].numpy()


class OptimumIntel(Peer):
    def __init__(self, path: Path, precision: str):
        import torch
        from optimum.intel import OVModelForCausalLM

        torch.set_num_threads(_threads())
        self.torch = torch
        self.model = OVModelForCausalLM.from_pretrained(path, ov_config=_openvino_config(precision), compile=True)
        self.ran_as = _ran_as(self.model.request.get_compiled_model(), precision)

    def generate(self, prompts, n):
        ids = self.torch.from_numpy(prompts)
        out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)  # fmt: skip
        return out[:, prompts.shape[1] :].numpy()


class OpenVINOGenAI(Peer):
    """``LLMPipeline`` with its defaults (on CPU: its paged-attention scheduler) on optimum-intel's IR."""

    def __init__(self, path: Path, precision: str):
        import openvino as ov
        import openvino_genai as og

        self.ov, self.og = ov, og
        self.pipe = og.LLMPipeline(str(path), "CPU", **_openvino_config(precision))
        # the pipeline does not say what it compiled to: the plugin's choice for the same IR and properties does
        probe = ov.Core().compile_model(str(Path(path) / "openvino_model.xml"), "CPU", _openvino_config(precision))
        self.ran_as = _ran_as(probe, precision)
        del probe

    def generate(self, prompts, n):
        config = self.og.GenerationConfig()
        config.max_new_tokens = n
        config.min_new_tokens = n
        config.ignore_eos = True
        config.do_sample = False
        inputs = self.og.TokenizedInputs(self.ov.Tensor(prompts), self.ov.Tensor(np.ones_like(prompts)))
        out = self.pipe.generate(inputs, config)
        return np.asarray([list(t)[-n:] for t in out.tokens], dtype=np.int64)


class OnnxRuntimeGenAI(Peer):
    def __init__(self, path: Path, precision: str):
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(path))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": _threads()}}}}))
        self.model = og.Model(config)
        self.ran_as = "fp32" if precision in ("default", "f32") else precision

    def generate(self, prompts, n):
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=prompts.shape[1] + n, min_length=prompts.shape[1] + n,
                                  do_sample=False, batch_size=prompts.shape[0])  # fmt: skip
        gen = og.Generator(self.model, params)
        gen.append_tokens(prompts.astype(np.int32))
        while not gen.is_done():
            gen.generate_next_token()
        return np.asarray([gen.get_sequence(i)[prompts.shape[1] :] for i in range(prompts.shape[0])], np.int64)


class LlamaCpp(Peer):
    def __init__(self, path: Path, precision: str):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_threads=_threads(), n_threads_batch=_threads(), n_ctx=1024,
                         n_batch=512, verbose=False, use_mmap=not HUGE_PAGES)  # fmt: skip
        self.ran_as = {"default": "fp32", "f32": "fp32", "q8": "q8_0"}.get(precision, precision)

    def generate(self, prompts, n):
        if prompts.shape[0] != 1:
            raise SystemExit("llama.cpp's Python API decodes one sequence at a time: batch 1 only")
        llm = self.llm
        llm.reset()
        out = []
        for token in llm.generate(prompts[0].tolist(), top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == n:
                break
        return np.asarray([out], np.int64)


RUNNERS = {"transformers": Transformers, "optimum-intel": OptimumIntel, "openvino-genai": OpenVINOGenAI,
           "onnxruntime-genai": OnnxRuntimeGenAI, "llama.cpp": LlamaCpp}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peer", choices=PEERS)
    ap.add_argument("--model", type=Path, required=True, help="Hugging Face checkpoint directory")
    ap.add_argument("--work", type=Path, required=True, help="where the peers' artifacts are made, and kept")
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--precision", default="default")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--huge-pages", action="store_true", help=f"weights on 2 MiB pages (needs GLIBC_TUNABLES={TUNABLE})"
    )
    args = ap.parse_args()
    if args.huge_pages and TUNABLE not in os.environ.get("GLIBC_TUNABLES", ""):
        raise SystemExit(f"--huge-pages: start this process with GLIBC_TUNABLES={TUNABLE} (malloc reads it at start)")
    global HUGE_PAGES
    HUGE_PAGES = args.huge_pages
    prompts = np.load(args.prompts).astype(np.int64)
    started = time.perf_counter()
    artifact = prepare(args.peer, args.model, args.work, args.precision)
    prepared_s = time.perf_counter() - started
    runner = RUNNERS[args.peer](artifact, args.precision)
    tokens = runner.generate(prompts, args.new_tokens)  # warm-up; its tokens are the ones compared
    walls, repeatable = [], True
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        again = runner.generate(prompts, args.new_tokens)
        walls.append(time.perf_counter() - t0)
        repeatable = repeatable and np.array_equal(again, tokens)  # greedy: the same tokens every time
    median = statistics.median(walls)
    result = {
        "peer": args.peer, "precision": args.precision, "ran_as": runner.ran_as, "artifact": str(artifact),
        "batch": int(prompts.shape[0]), "prompt_length": int(prompts.shape[1]), "new_tokens": args.new_tokens,
        "threads": _threads(), "prepare_s": round(prepared_s, 1), "walls_s": [round(w, 4) for w in walls],
        "tokens_per_s": prompts.shape[0] * args.new_tokens / median, "repeatable": repeatable,
        "tokens": tokens.tolist(), "pages": "2 MiB" if args.huge_pages else "4 KiB",
        "anon_huge_mib": round(_anon_huge_mib()),
    }  # fmt: skip
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
