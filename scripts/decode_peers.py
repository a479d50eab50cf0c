"""attnkit's decode of a keras-hub CausalLM against the runtimes a user of the same architecture would pick
instead (issue 36), in one run on this machine, with the DRAM bandwidth measured around every row.

    make peers                      # the peers' pinned venv (.venv-peers), once
    python scripts/decode_peers.py MODEL.keras --work DIR [--batch 1] [--prompt-length 32] [--new-tokens 128]
        [--repeats 3] [--peers transformers,optimum-intel,openvino-genai,onnxruntime-genai,llama.cpp]
        [--attnkit-backends onnxruntime,openvino-stateful] [--rounds 1]

1. The checkpoint: keras-hub's own ``export_to_transformers`` writes MODEL's weights as a Hugging Face
   checkpoint (``DIR/hf``), so every peer runs the same weights (Llama 3, GPT-2, Mistral, Gemma, Qwen: the
   architectures keras-hub exports).
2. attnkit: ``attnkit export MODEL --generate --format onnx,openvino --precision fp32,fp16[,bf16]``
   (``DIR/attnkit``, made once; fp16: OpenVINO's weight-only f16 step, f32 compute; bf16 where OpenVINO's plugin
   computes a bf16 hint in bf16 here, asked of it, as the peers' OpenVINO defaults do) and ``attnkit
   bench-generate`` over it (fp32 rows checked token for token against keras-hub's eager decode, fp16 and bf16
   rows on their logits tolerance with their token match reported; its own bandwidth probes).
3. Each peer through its own exporter and API (``scripts/peers/decode_peer.py`` in ``.venv-peers``): the
   transformers model (PyTorch eager, the architecture's reference), optimum-intel's stateful OpenVINO model,
   OpenVINO GenAI's ``LLMPipeline`` on it, onnxruntime-genai's model builder output, llama.cpp's GGUF; each
   at its defaults (OpenVINO's default on a CPU with bf16 is bf16 compute and a u8 KV cache, labelled so)
   and in fp32; beside attnkit's fp16 rows, llama.cpp's f16 GGUF and OpenVINO on optimum-cli's ``--weight-format
   fp16`` IR (``--precisions ...,f16``), beside its bf16 rows llama.cpp's bf16 GGUF, beside its int8 rows (weight-only)
   llama.cpp's q8_0 GGUF and optimum-cli's ``--weight-format int8`` IR (``q8``). Peer tokens are compared with the transformers fp32 reference; the transformers reference
   with keras-hub's own ``generate()`` on the same prompts (the same weights give the same tokens).
4. A DRAM copy probe (attnkit's :class:`~attnkit.benchmark.roofline.BandwidthProbes`, same threads) before
   the first and after every peer; the bound of the table is the highest probe of the run, attnkit's included.
   Beside each, a read-only probe of the same size (a float32 matrix-vector product, how a step reads its
   weights; its "% of read probe" column): a copy counts its writes too, and a step only reads.
5. ``--peer-pages 4k,2m``: every peer on the 4 KiB pages it gets by default and again with its weights on 2 MiB
   pages (glibc's ``glibc.malloc.hugetlb=1``; llama.cpp reading its GGUF into memory), since attnkit's runners
   put theirs there (:mod:`attnkit.core.hugepages`): the best peer configuration includes it. Each row says how
   many MiB of its process were on huge pages.
6. ``--rounds N``: all of 3 and 2 again, N times in turn, each row's tok/s the median of its N (a shared VM's
   bandwidth drifts over minutes, and rows run one after another; measured 38-53 GB/s within one run).

Writes ``DIR/peers.json`` and prints a markdown table: tokens/s, its ratio to the best peer, GB/s of weights
streamed a token (the bytes of attnkit's fp32 step, halved for a row that ran bf16) and its share of the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PEER_PY = ROOT / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = ROOT / "scripts" / "peers" / "decode_peer.py"
ATTNKIT = ROOT / ".venv" / "bin" / "attnkit"
DEFAULT_PEERS = "transformers,optimum-intel,openvino-genai,onnxruntime-genai,llama.cpp"
#: ``--peer-pages``: how a peer's weights are paged (attnkit's runners: 2 MiB, attnkit.core.hugepages)
PAGES = {"4k": "4 KiB", "2m": "2 MiB"}
#: bytes a weight takes in the precision a row ran in, against fp32
WEIGHT_SCALE = {"fp32": 1.0, "f32": 1.0, "bf16": 0.5, "f16": 0.5, "int8": 0.25, "q8_0": 34 / 128}  # q8_0: 32 + a scale


def export_checkpoint(model_path: Path, out: Path):
    """``(keras model, Hugging Face checkpoint dir)``: keras-hub's own exporter, the same weights."""
    import keras

    model = keras.saving.load_model(model_path)
    if not (out / "config.json").exists():
        tmp = out.with_name(out.name + ".tmp")
        model.export_to_transformers(str(tmp))
        tmp.replace(out)
    with_architecture(out / "config.json")
    return model, out


def with_architecture(config_path: Path) -> None:
    """Write ``architectures`` into a checkpoint's config where keras-hub's exporter left it out (GPT-2, Qwen 2
    in keras-hub 0.32; Llama's has it): onnxruntime-genai's model builder and llama.cpp's converter pick their
    model class by it, and transformers' ``save_pretrained`` always writes it. The class is transformers' own
    causal-LM class for the config's ``model_type``, asked of the peers' venv."""
    config = json.loads(config_path.read_text())
    if config.get("architectures"):
        return
    ask = ("import sys; from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as m; "
           "print(m[sys.argv[1]])")  # fmt: skip
    done = subprocess.run([str(PEER_PY), "-c", ask, config["model_type"]], capture_output=True, text=True)
    if done.returncode == 0 and done.stdout.strip():
        config["architectures"] = [done.stdout.strip()]
        config_path.write_text(json.dumps(config, indent=2))


def merge_rounds(rounds: list[list[dict]], key) -> list[dict]:
    """The first round's rows, each that ran in more than one round with every round's tok/s
    (``rounds_tokens_per_s``) and their median as its ``tokens_per_s``; rows are matched by ``key(row)``."""
    first = rounds[0]
    for row in first:
        seen = [x["tokens_per_s"] for other in rounds for x in other if key(x) == key(row) and x.get("tokens_per_s")]
        if row.get("tokens_per_s") and len(seen) > 1:
            row["rounds_tokens_per_s"], row["tokens_per_s"] = seen, float(np.median(seen))
    return first


def keras_hub_tokens(model, prompts: np.ndarray, n: int) -> np.ndarray:
    """keras-hub's own greedy ``generate()`` (the model's reference), every row padded to its last token."""
    from attnkit.models.keras_hub import text_inputs

    batch, length = prompts.shape
    ids = np.zeros((batch, length + n), "int32")
    ids[:, :length] = prompts
    mask = np.zeros_like(ids, dtype=bool)
    mask[:, :length] = True
    model.compile(sampler="greedy")
    inputs = text_inputs(model, {"token_ids": ids, "padding_mask": mask})
    out = model.generate(inputs, max_length=length + n, stop_token_ids=None)
    return np.asarray(out["token_ids"])[:, length:]


def run_peer(peer: str, precision: str, args, hf: Path, prompts_path: Path, pages: str = "4k") -> dict:
    out = args.work / f"peer-{peer}-{precision}-{pages}.json"
    cmd = [str(PEER_PY), str(PEER_SCRIPT), peer, "--model", str(hf), "--work", str(args.work / "peers"),
           "--prompts", str(prompts_path), "--precision", precision, "--new-tokens", str(args.new_tokens),
           "--repeats", str(args.repeats), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PEER_THREADS": str(args.threads)}
    if pages == "2m":  # glibc's own switch, read when the process starts (scripts/peers/decode_peer.py)
        cmd.append("--huge-pages")
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1"]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"peer": peer, "precision": precision, "pages": PAGES[pages], "error": tail[0][:300]}
    return json.loads(out.read_text())


def attnkit_rows(args, model_path: Path, round_: int = 0) -> dict:
    exp = args.attnkit_export or args.work / "attnkit"
    if not (exp / "manifest.json").exists():
        subprocess.run([str(ATTNKIT), "export", str(model_path), "--out", str(exp), "--generate",
                        "--format", "onnx,openvino", "--precision", args.attnkit_precisions], check=True)  # fmt: skip
    out = args.work / ("attnkit-bench" if not round_ else f"attnkit-bench-{round_ + 1}")
    subprocess.run([str(ATTNKIT), "bench-generate", str(exp), "--backends", args.attnkit_backends,
                    "--batch-sizes", str(args.batch), "--prompt-lengths", str(args.prompt_length),
                    "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats),
                    "--precision", args.attnkit_precisions,
                    "--threads", str(args.threads), "--out", str(out)], check=True)  # fmt: skip
    return json.loads((out / "generation.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a keras-hub CausalLM .keras file")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peers", default=DEFAULT_PEERS)
    ap.add_argument("--precisions", default=None,
                    help="peer precisions: default (its own), f32, f16 (llama.cpp's f16 GGUF, optimum-cli's fp16-weight IR), "
                         "bf16 (llama.cpp's bf16 GGUF), q8 (llama.cpp's q8_0, optimum-cli's int8 weights) [default: "
                         "default,f32, and f16/bf16/q8 where attnkit's rows include fp16/bf16/int8]")  # fmt: skip
    ap.add_argument(
        "--peer-pages",
        default="4k,2m",
        help="peers' weights on 4 KiB pages (their default) and/or 2 MiB pages (as attnkit loads its own)",
    )
    ap.add_argument("--attnkit-backends", default="onnxruntime,openvino-stateful,openvino-genai")
    ap.add_argument("--attnkit-precisions", default=None,
                    help="export's and bench-generate's --precision [default: fp32, fp16 (OpenVINO: f16 weights, f32 "
                         "compute), and bf16 where OpenVINO's plugin computes a bf16 hint in bf16 here (asked of it), "
                         "as the peers' OpenVINO defaults do]")  # fmt: skip
    ap.add_argument("--attnkit-export", type=Path, help="an existing `attnkit export --generate` of MODEL to use")
    ap.add_argument("--skip-reference", action="store_true", help="no keras-hub generate() cross-check")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every row this many times, the rows in turn each round; a row's tok/s is its median over "
                         "the rounds (a shared VM's bandwidth drifts while rows run one after another)")  # fmt: skip
    args = ap.parse_args()
    if args.attnkit_precisions is None:
        from attnkit.core.machine import openvino_compiles

        args.attnkit_precisions = "fp32,fp16" + (",bf16" if openvino_compiles("bf16") == "bf16" else "")
    if args.precisions is None:
        # the best peer configuration includes the peers' 16-bit weights wherever attnkit runs 16-bit rows: llama.cpp's
        # f16 GGUF and optimum-cli's fp16-weight IR beside attnkit's f16-weight step; llama.cpp's bf16 beside bf16
        ours = args.attnkit_precisions.split(",")
        pairs = (("f16", "fp16"), ("bf16", "bf16"), ("q8", "int8"))
        args.precisions = "default,f32" + "".join(f",{p}" for p, a in pairs if a in ours)
    if not set(args.peer_pages.split(",")) <= set(PAGES):
        ap.error(f"--peer-pages takes a comma list of {', '.join(PAGES)}, not {args.peer_pages!r}")
    if not PEER_PY.exists():
        sys.exit("no peers venv: run `make peers` first (.venv-peers, scripts/peers/requirements.txt)")
    args.work.mkdir(parents=True, exist_ok=True)
    from attnkit.benchmark.roofline import BandwidthProbes

    model, hf = export_checkpoint(args.model, args.work / "hf")
    vocab = int(model.backbone.vocabulary_size)
    prompts = np.random.default_rng(args.seed).integers(3, vocab, (args.batch, args.prompt_length)).astype("int64")
    prompts_path = args.work / "prompts.npy"
    np.save(prompts_path, prompts)
    reference_kh = None if args.skip_reference else keras_hub_tokens(model, prompts, args.new_tokens)
    del model

    probes = BandwidthProbes(threads=args.threads)
    # beside each copy, a read-only probe of the same DRAM size (a matrix-vector product, as a decode step reads
    # its weights): a copy's figure counts its writes, and on this VM the two cores read at ~60 % of it
    reads: list[float] = []

    def probe() -> float:
        reads.append(probes.read(probes.mib << 20)["gbps"])
        return probes.copy()["gbps"]

    copies = [probe()]
    peer_rounds, rounds = [], []
    for round_ in range(args.rounds):
        peer_rounds.append([])
        for peer in args.peers.split(","):
            for precision in args.precisions.split(","):
                if peer == "transformers" and precision != "f32":
                    continue  # PyTorch eager has no other CPU default than fp32
                if peer == "onnxruntime-genai" and precision == "default":
                    continue  # the builder's fp32 is its default for -p fp32; no runtime precision switch
                if peer == "llama.cpp" and precision == "default":
                    continue  # llama.cpp runs the GGUF's own types: f32 asked
                if precision == "bf16" and peer != "llama.cpp":
                    continue  # OpenVINO's default is its bf16 where native; ORT's CPU has no fast bf16 MatMul
                if precision in ("f16", "q8") and peer not in ("llama.cpp", "optimum-intel", "openvino-genai"):
                    continue  # the peers whose own exporters write f16/8-bit weights for a CPU; transformers: fp32

                for pages in args.peer_pages.split(","):
                    if peer == "transformers" and pages != "4k":
                        continue  # the reference, not a contender
                    started = time.perf_counter()
                    result = run_peer(peer, precision, args, hf, prompts_path, pages)
                    result["wall_s"] = round(time.perf_counter() - started, 1)
                    copies.append(probe())
                    peer_rounds[-1].append(result)
                    print(f"[{round_ + 1}] {peer} {precision} {PAGES[pages]}: "
                          f"{result.get('tokens_per_s') or result.get('error')}", flush=True)  # fmt: skip
        rounds.append(attnkit_rows(args, args.model, round_))
        copies.append(probe())
    peers = merge_rounds(peer_rounds, lambda p: (p["peer"], p["precision"], p.get("pages")))
    ours = rounds[0]
    ours["rows"] = merge_rounds([o["rows"] for o in rounds], lambda r: (r["label"], r["precision"]))

    reference = next((np.asarray(p["tokens"]) for p in peers if p["peer"] == "transformers" and "tokens" in p), None)
    for p in peers:
        if reference is not None and "tokens" in p:
            p["token_match_vs_transformers"] = float((np.asarray(p["tokens"]) == reference).mean())
    fp32_row = next((r for r in ours["rows"] if r["precision"] == "fp32" and r.get("bytes_per_step")), None)
    weight_bytes = fp32_row["bytes_per_step"] if fp32_row else None
    # DRAM copies only: a read probe of a working set that fits in the last-level cache is no bound for a model
    # that does not
    bound = max(copies + [p["gbps"] for p in ours["bandwidth"].get("probes", []) if p.get("kind") == "copy"])
    rows = []
    paged = (ours.get("environment") or {}).get("huge_pages", "4 KiB pages")  # how attnkit's runners paged theirs
    for r in ours["rows"]:
        if r.get("tokens_per_s"):
            rows.append({"who": "attnkit", "row": f"{r['label']} ({r['precision']}, {paged})",
                         "ran_as": r.get("ran_as") or r["precision"],
                         "tokens_per_s": r["tokens_per_s"], "bytes": r.get("bytes_per_step"),
                         "rounds": r.get("rounds_tokens_per_s"),
                         "tokens": f"identical to keras-hub eager: {r.get('token_match')}"})  # fmt: skip
    for p in peers:
        if "tokens_per_s" not in p:
            rows.append({"who": p["peer"], "row": f"{p['peer']} ({p['precision']}, {p.get('pages')})",
                         "error": p["error"]})  # fmt: skip
            continue
        scale = WEIGHT_SCALE.get(p["ran_as"].split(" ")[0], 1.0)
        pages = f"{p.get('pages')} pages, {p.get('anon_huge_mib')} MiB huge"
        rows.append({"who": p["peer"], "row": f"{p['peer']} ({p['precision']}, {pages})", "ran_as": p["ran_as"],
                     "tokens_per_s": p["tokens_per_s"], "bytes": weight_bytes and weight_bytes * scale,
                     "rounds": p.get("rounds_tokens_per_s"),
                     "tokens": f"match vs transformers: {p.get('token_match_vs_transformers')}"})  # fmt: skip
    best_peer = max((r["tokens_per_s"] for r in rows if r["who"] != "attnkit" and "tokens_per_s" in r), default=None)
    for r in rows:
        if "tokens_per_s" in r:
            r["x_best_peer"] = r["tokens_per_s"] / best_peer if best_peer else None
            if r.get("bytes"):
                r["gbps"] = r["bytes"] * r["tokens_per_s"] / args.batch / 1e9  # weights stream once a step
                r["pct_of_bound"] = 100 * r["gbps"] / bound
                r["pct_of_read"] = 100 * r["gbps"] / max(reads)
    summary = {
        "model": str(args.model), "batch": args.batch, "prompt_length": args.prompt_length,
        "new_tokens": args.new_tokens, "threads": args.threads, "rounds": args.rounds, "copy_probes_gbps": copies,
        "bound_gbps": bound, "read_probes_gbps": reads,
        "keras_hub_vs_transformers": None if reference_kh is None or reference is None
        else float((reference_kh == reference).mean()),
        "environment": ours.get("environment"), "rows": rows, "peers": peers,
    }  # fmt: skip
    (args.work / "peers.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\ncopy probes {', '.join(f'{c:.1f}' for c in copies)} GB/s; bound {bound:.1f} GB/s; read probes "
          f"{', '.join(f'{c:.1f}' for c in reads)} GB/s; keras-hub generate() tokens vs transformers: "
          f"{summary['keras_hub_vs_transformers']}")  # fmt: skip
    head = "tok/s" if args.rounds == 1 else f"tok/s (median of {args.rounds} rounds: each round's)"
    print(
        f"| row | ran as | {head} | x best peer | GB/s | % of bound | % of read probe | tokens |\n"
        "|---|---|---:|---:|---:|---:|---:|---|"
    )
    for r in rows:
        if "error" in r:
            print(f"| {r['row']} | - | - | - | - | - | - | not run: {r['error']} |")
            continue
        gbps = (f"{r['gbps']:.1f} | {r['pct_of_bound']:.0f} % | {r['pct_of_read']:.0f} %" if r.get("gbps")
                else "- | - | -")  # fmt: skip
        xb = f"{r['x_best_peer']:.2f}" if r.get("x_best_peer") else "-"
        each = f" ({', '.join(f'{t:.1f}' for t in r['rounds'])})" if r.get("rounds") else ""
        print(f"| {r['row']} | {r['ran_as']} | {r['tokens_per_s']:.1f}{each} | {xb} | {gbps} | {r['tokens']} |")


if __name__ == "__main__":
    main()
