"""Run attnkit's CLI on many bad inputs and check each ends the way the house style says: exit != 0,
no traceback, at most four lines on stderr naming the flag, nothing new or damaged on disk, no
stray temporary files.

    python scripts/bad_input_battery.py            # prints one line per case, then a summary

It needs a small export to poke at; it makes one (mha, onnx with int8) in a temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="battery-"))
    try:
        return _battery(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # its export, the cases' paths and their TMPDIR


def _battery(work: Path) -> int:
    tmp = work / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "3"}
    exp = work / "exp"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "attnkit",
            "export",
            "mha",
            "--out",
            exp,
            "--format",
            "onnx,savedmodel",
            "--precision",
            "fp32,int8",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    (work / "file.txt").write_text("x")
    (work / "notexp").mkdir()
    (work / "bad.keras").write_text("not a zip")
    (work / "full").mkdir()
    (work / "full" / "keep").write_text("keep me")
    import numpy as np

    np.savez(work / "empty.npz")
    np.savez(work / "wrongname.npz", tokens=np.ones((8, 4, 512), "float32"))
    np.savez(work / "intx.npz", x=np.ones((8, 4, 512), "int32"))
    np.savez(work / "few.npz", x=np.ones((2, 4, 512), "float32"))
    (work / "bad.jsonl").write_text('{"text": "one"}\nnot json\n')
    (work / "texts.txt").write_text("one\ntwo\nthree\nfour\n")
    E, W = str(exp), str(work)
    cases: list[tuple[list[str], str]] = [
        (["export", "no-such-preset"], "MODEL"),
        (["export", "mha", "--format", ""], "--format"),
        (["export", "mha", "--format", "onnx,,savedmodel"], "--format"),
        (["export", "mha", "--format", "pytorch"], "--format"),
        (["export", "mha", "--precision", ""], "--precision"),
        (["export", "mha", "--precision", "fp8"], "--precision"),
        (["export", "mha", "--precision", "int8", "--format", "savedmodel"], "--precision"),
        (["export", "mha", "--precision", "bf16", "--format", "onnx"], "--precision"),
        (["export", "mha", "--format", "onnx", "--openvino-precision", "fp32"], "--openvino-precision"),
        (["export", "mha", "--format", "openvino", "--openvino-precision", "int8"], "--openvino-precision"),
        (["export", "mha", "--openvino-precision", "fp9"], "--openvino-precision"),
        (["export", "mha", "--opset", "3"], "--opset"),
        (["export", "mha", "--opset", "x"], "--opset"),
        (["export", "mha", "--target", "cpu-avx9000"], "--target"),
        (["export", "mha", "--target", "sm89", "--trt-target", "sm86"], "--trt-target"),
        (["export", "mha", "--trt-target", "sm89"], "--trt-target"),
        (["export", "mha", "--batch", "1:8:32"], "--batch"),
        (["export", "mha", "--format", "tensorrt", "--precision", "int8"], "--precision"),
        (["export", "mha", "--out", f"{W}/full"], "--out"),
        (["export", "mha", "--out", f"{W}/file.txt"], "--out"),
        (["export", "mha", "--out", "/proc/attnkit"], "--out"),
        (["export", f"{W}/bad.keras", "--out", f"{W}/o1"], "MODEL"),
        (["export", f"{W}/missing.keras", "--out", f"{W}/o2"], "MODEL"),
        (["export", f"{W}/notexp"], "MODEL"),
        (["export", "mha", "--import", "no_such_module_xyz", "--out", f"{W}/o3"], "--import"),
        (["export", E, "--format", "onnx"], "--format"),
        (["export", E, "--format", "tensorrt", "--out", f"{W}/new"], "--out"),
        (["export", E, "--format", "tensorrt", "--precision", "int8"], "--precision"),
        (["verify", f"{W}/notexp"], "DIR"),
        (["verify", f"{W}/nothing"], "DIR"),
        (["verify", E, "--backends", ""], "--backends"),
        (["verify", E, "--backends", "pytorch"], "--backends"),
        (["verify", E, "--backends", "onnxruntime-fp16"], "--backends"),
        (["verify", E, "--atol", "x"], "--atol"),
        (["verify", E, "--atol", "-1"], "--atol"),
        (["verify", E, "--atol", "fp16=1e-2"], "--atol"),
        (["verify", E, "--atol", "fp32=1e-2", "--atol", "fp32=1e-3"], "--atol"),
        (["verify", E, "--json", W], "--json"),
        (["verify", E, "--data", f"{W}/nope.npz"], "--data"),
        (["verify", E, "--data", f"{W}/file.txt"], "--data"),
        (["verify", E, "--data", f"{W}/empty.npz"], "--data"),
        (["verify", E, "--data", f"{W}/wrongname.npz"], "--data"),
        (["verify", E, "--data", f"{W}/intx.npz"], "--data"),
        (["verify", E, "--data", f"{W}/few.npz"], "--data"),
        (["verify", E, "--data", f"{W}/bad.jsonl"], "--data"),
        (["compare"], "RESULTS"),
        (["package", E, "--triton", f"{W}/kr", "--kserve", "ftp://x/y"], "--kserve"),
        (["package", E, "--tfserving", f"{W}/kt", "--kserve", "s3://b/r"], "--kserve"),
        (["package", E, "--triton", f"{W}/kr2", "--kserve", "s3://"], "--kserve"),
        (["bench", "mha", "--plan", f"{W}/file.txt"], "--plan"),
        (["bench", "mha", "--plan", f"{W}/p.yaml", "--out", f"{W}/po"], "--out"),
        (["bench", E, "--batch-sizes", "1", "--seq-lens", "8", "--cell", "3"], "--cell"),
        (["bench", E, "--cell", "-1"], "--cell"),
        (["tune", f"{W}/nothing", "--model", "m", "--latency-budget", "10"], "REPO"),
        (["tune", W, "--model", "m", "--latency-budget", "10"], "--model"),
        (["tune", W, "--model", "m", "--latency-budget", "x"], "--latency-budget"),
        (["tune", W, "--model", "m"], "--latency-budget"),
        (["compare", f"{W}/nope.json"], "RESULTS"),
        (["compare", f"{W}/bad.jsonl"], "RESULTS"),
        (["verify", E, "--data", f"{W}/texts.txt"], "--data"),
        (["export", "decoder-small", "--data", f"{W}/texts.txt", "--out", f"{W}/fromtexts"], "--data"),
        (["verify", E, "--accuracy-target", "0.9"], "--accuracy-target"),
        (["verify", E, "--data", f"{W}/few.npz", "--accuracy-target", "0"], "--accuracy-target"),
        (["bench", E, "--target", "host"], "--target"),
        (["bench", "mha", "--data", f"{W}/wrongname.npz", "--batch-sizes", "1"], "--data"),
        (["export", "mha", "--data", f"{W}/intx.npz", "--out", f"{W}/fromdata"], "--data"),
        (["verify", E, "--json", "/proc/x.json"], "--json"),
        (["verify", E, "--seed", "abc"], "--seed"),
        (["bench", "mha", "--batch-sizes", "0"], "--batch-sizes"),
        (["bench", "mha", "--batch-sizes", ""], "--batch-sizes"),
        (["bench", "mha", "--batch-sizes", "1,,2"], "--batch-sizes"),
        (["bench", "mha", "--seq-lens", "-5"], "--seq-lens"),
        (["bench", "mha", "--seq-lens", "100000"], "--seq-lens"),
        (["bench", "mha", "--precision", ""], "--precision"),
        (["bench", "mha", "--precision", "fp8"], "--precision"),
        (["bench", "mha", "--backends", ""], "--backends"),
        (["bench", "mha", "--backends", "pytorch"], "--backends"),
        (["bench", "mha", "--backends", "onnxruntime", "--precision", "bf16"], "--precision"),
        (["bench", "mha", "--warmup", "nan"], "--warmup"),
        (["bench", "mha", "--warmup", "-1"], "--warmup"),
        (["bench", "mha", "--min-seconds", "0"], "--min-seconds"),
        (["bench", "mha", "--min-seconds", "inf"], "--min-seconds"),
        (["bench", "mha", "--min-iterations", "0"], "--min-iterations"),
        (["bench", "mha", "--threads", "0"], "--threads"),
        (["bench", "mha", "--out", f"{W}/file.txt"], "--out"),
        (["bench", E, "--backends", "tensorrt"], "--backends"),
        (["bench", E, "--backends", "onnxruntime-fp16"], "--backends"),
        (["bench", f"{W}/notexp"], "MODEL_OR_DIR"),
        (["bench", "no-such-preset"], "MODEL"),
        (["models", "--seq", "0"], "--seq"),
        (["models", "--seq", "-5"], "--seq"),
        (["attention", "mha", "--out", f"{W}/a.jpg"], "--out"),
        (["attention", "mha", "--layer", "7", "--out", f"{W}/a.png"], "--layer"),
        (["attention", "mha", "--seq", "0", "--out", f"{W}/a.png"], "--seq"),
        (["attention", "encoder-tiny", "--seq", "100000", "--out", f"{W}/a.png"], "--seq"),
        (["package", E], "--triton"),
        (["package", E, "--triton", f"{W}/file.txt"], "--triton"),
        (["package", E, "--triton", "/proc/attnkit-repo"], "--triton"),
        (["package", E, "--tfserving", f"{W}/file.txt"], "--tfserving"),
        (["package", E, "--triton", f"{W}/r", "--version", "0"], "--version"),
        (["package", E, "--triton", f"{W}/r", "--name", ""], "--name"),
        (["package", E, "--triton", f"{W}/r", "--name", "../x"], "--name"),
        (["package", f"{W}/notexp", "--triton", f"{W}/r"], "DIR"),
        (["run", "mha", "--batch-sizes", "0", "--out", f"{W}/run0"], "--batch-sizes"),
        (["run", "mha", "--precision", "fp8", "--out", f"{W}/run1"], "--precision"),
        (["run", "mha", "--target", "gpu", "--out", f"{W}/run2"], "--target"),
        (
            ["run", "mha", "--precision", "fp32", "--openvino-precision", "fp16", "--out", f"{W}/run3"],
            "--openvino-precision",
        ),
        (["run", "no-such-preset"], "MODEL"),
        (["inspect", f"{W}/file.txt"], "PLAN"),
        (["inspect", f"{W}/none.plan"], "PLAN"),
        (["bench-arrivals", f"{W}/notexp", "--rate", "2"], "DIR"),
        (["bench-arrivals", E, "--rate", "2"], "DIR"),
        (["bench-arrivals", E, "--rate", "0"], "--rate"),
        (["bench-arrivals", E, "--rate", "nan"], "--rate"),
        (["bench-arrivals", E, "--rate", "2", "--static", "pytorch"], "--static"),
        (["bench-arrivals", E, "--rate", "2", "--requests", "0"], "--requests"),
        (["bench-arrivals", E, "--rate", "2", "--json", W], "--json"),
        (["nosuchcommand"], "nosuchcommand"),
        (["export"], "MODEL"),
    ]
    before = {p: tree_digest(p) for p in (exp, work / "full")}
    failures = 0
    for args, flag in cases:
        existed = {p.name for p in work.iterdir()}
        run = subprocess.run(
            [sys.executable, "-m", "attnkit", *args], env=env, capture_output=True, text=True, timeout=600
        )
        err = run.stderr.strip().splitlines()
        problems = []
        if run.returncode == 0:
            problems.append("exit 0")
        if "Traceback" in run.stderr or "Traceback" in run.stdout:
            problems.append("traceback")
        error_lines = [line for line in err if line.startswith("Error")]
        if len(error_lines) != 1 or len([line for line in err if not line.startswith("Warning")]) > 4:
            problems.append(f"{len(err)} stderr lines")
        if error_lines and flag not in error_lines[0]:
            problems.append(f"flag {flag} not named")
        if "internal error" in run.stderr:
            problems.append("internal error")
        new = {p.name for p in work.iterdir()} - existed
        if new:
            problems.append(f"left {sorted(new)}")
        # onnxruntime writes its own session file `.ses` into the temp dir on every InferenceSession:
        # not attnkit's to delete
        stray = [p for p in tmp.iterdir() if p.name != ".ses"]
        if stray:
            problems.append(f"temp files {[p.name for p in stray][:3]}")
            for p in stray:
                subprocess.run(["rm", "-rf", str(p)])
        failures += bool(problems)
        print(
            ("FAIL " if problems else "ok   ") + " ".join(args)[:90], "|", "; ".join(problems) or error_lines[0][:110]
        )
    for p, digest in before.items():
        if tree_digest(p) != digest:
            failures += 1
            print(f"FAIL {p} was changed")
    print(f"{len(cases)} cases, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
