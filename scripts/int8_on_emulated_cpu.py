"""Run every int8 scheme on an emulated CPU class, to see what onnxruntime's kernels do there.

onnxruntime's MLAS picks its int8 kernels from CPUID. qemu-user (`apt-get install qemu-user`)
answers CPUID as the CPU model it emulates, so the same files can be run here as on an AVX2-only
Haswell (no AVX-512, no VNNI) and on this machine, one run after the other:

    python scripts/int8_on_emulated_cpu.py encoder-tiny --cpu Haswell-v4

The export, the quantisation and the eager Keras reference run natively; only onnxruntime runs
under `qemu-x86_64 -cpu CPU` (TensorFlow would be far too slow emulated). Prints relative L2 and
cosine against the eager fp32 model, native and emulated, per scheme. Evidence behind
attnkit.core.targets, not a test: qemu is not a project dependency.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FILES = ["model.onnx", "int8_u8s8.onnx", "int8_u8u8.onnx", "int8_u8s8-reduce-range.onnx"]


def run_files(folder: Path) -> None:
    """The emulated half: onnxruntime only (called as `--run FOLDER` under qemu)."""
    import onnxruntime as ort

    data = np.load(folder / "data.npz")
    feeds = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
    ref = {k[4:]: data[k].astype(np.float64) for k in data.files if k.startswith("ref_")}
    for name in FILES:
        session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        outs = [o.name for o in session.get_outputs()]
        got = dict(zip(outs, session.run(outs, feeds)))
        for key, r in ref.items():
            g = got[key].astype(np.float64)
            rel = np.linalg.norm(g - r) / np.linalg.norm(r)
            cos = np.vdot(g, r) / np.linalg.norm(g) / np.linalg.norm(r)
            print(f"{name}\t{rel:.4f}\t{cos:.5f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset", nargs="?")
    ap.add_argument("--cpu", default="Haswell-v4", help="qemu CPU model (qemu-x86_64 -cpu help)")
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        run_files(args.run)
        return
    qemu = shutil.which("qemu-x86_64")
    if not qemu:
        sys.exit("needs qemu-user: apt-get install qemu-user")

    import onnx

    import attnkit
    from attnkit.core.targets import INT8_SCHEMES
    from attnkit.exporters.precision import to_int8
    from attnkit.runtimes.base import Source
    from attnkit.runtimes.registry import get_runner

    with tempfile.TemporaryDirectory() as tmp:
        out = attnkit.export(args.preset, Path(tmp) / "e", formats="onnx", check=False).out
        fp32 = onnx.load(out / "model.onnx")
        for name, scheme in INT8_SCHEMES.items():
            onnx.save(to_int8(fp32, False, scheme), out / f"int8_{name}.onnx")
        source = Source(out)
        feeds = source.spec.sample_feeds(3, 45, seed=11)
        with get_runner("keras")(source) as runner:
            ref = runner.infer(feeds)
        np.savez(
            out / "data.npz", **{f"in_{k}": v for k, v in feeds.items()}, **{f"ref_{k}": v for k, v in ref.items()}
        )
        me = [sys.executable, __file__, "--run", str(out)]
        results = {}
        for label, cmd in (("native", me), (f"qemu -cpu {args.cpu}", [qemu, "-cpu", args.cpu, *me])):
            run = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[label] = [line.split("\t") for line in run.stdout.splitlines() if "\t" in line]
        print(f"{args.preset}, batch 3 x seq 45, against eager Keras fp32 (rel L2 / cosine):\n")
        print("| file | " + " | ".join(results) + " |")
        print("|---|" + "---:|" * len(results))
        for i, name in enumerate(FILES):
            cells = [f"{rows[i][1]} / {rows[i][2]}" for rows in results.values()]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
