"""Kubernetes manifests for what attnkit packaged and measured (issue 37): a KServe ``InferenceService`` for a
Triton model repository, and a Kubernetes Indexed ``Job`` that runs a benchmark sweep one cell per pod.

Written as plain dicts (YAML on disk) so that attnkit itself needs neither ``kserve`` nor ``kubernetes``: the
manifests are checked against the official Python models of both projects by :mod:`attnkit.serving.kube_check`,
which runs in the serving venv (``kserve`` pins protobuf < 7, attnkit's TensorFlow needs 7).

- The ``InferenceService`` is KServe's v1beta1 shape for Triton: ``predictor.model.modelFormat.name: triton``,
  ``protocolVersion: v2`` (KServe's own ``kserve-tritonserver`` runtime serves it), ``storageUri`` where the
  repository was uploaded, and resources with **requests equal to limits** (Kubernetes' Guaranteed class, so
  the pod gets the CPUs the model was measured with and no CPU is shared with a neighbour): CPUs = the threads
  the measurement used; memory = twice the repository's bytes (each backend holds its weights once and its
  compiled form once) plus 1 GiB for the server, a stated rule, not a measurement.
- The ``Job`` is ``completionMode: Indexed``: pod ``i`` runs ``attnkit bench ... --cell i`` (the ``i``-th
  (batch, sequence) cell of the grid) and writes ``results.json`` under ``<results>/cell-<i>``; ``attnkit compare``
  merges them. Requests equal limits here too: a cell measured on fewer CPUs than asked is not the same cell.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import AttnkitError

ISVC_API = "serving.kserve.io/v1beta1"
#: the URI schemes KServe's storage initializer downloads from (its docs: "Model storage")
STORAGE_SCHEMES = ("s3", "gs", "pvc", "hdfs", "webhdfs", "http", "https", "oci", "hf", "azure")
#: memory allowed for the server itself beside twice the repository's bytes (a stated allowance, not measured)
SERVER_OVERHEAD_BYTES = 1 << 30


def dns_name(name: str, flag: str) -> str:
    """``name`` as a DNS-1123 label (KServe and Job names): lower case, '-' for anything else, at most 63
    characters (45 for an InferenceService: KServe appends ``-predictor-...``), starting with a letter."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)[:45].rstrip("-")
    if not label or not label[0].isalpha():
        raise AttnkitError(
            f"`{name}` gives no Kubernetes name (DNS-1123: lower-case letters, digits and '-', starting with a "
            "letter).",
            flag=flag,
            hint="Give --name a name that starts with a letter.",
        )
    return label


def check_storage_uri(uri: str) -> str:
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme not in STORAGE_SCHEMES or not uri.split("://", 1)[1].strip("/"):
        raise AttnkitError(
            f"`{uri}` is not a storage URI KServe downloads from.",
            flag="--kserve",
            hint=f"Give where the repository is uploaded: {', '.join(s + '://' for s in STORAGE_SCHEMES[:3])}...",
        )
    return uri


def tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path``, links followed (a packaged repository links its artifacts)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def quantity_mib(nbytes: int) -> str:
    return f"{-(-nbytes // (1 << 20))}Mi"


def resources(cpus: int, nbytes: int) -> dict:
    """Requests equal to limits (Guaranteed QoS): ``cpus`` whole CPUs and ``nbytes`` of memory."""
    asked = {"cpu": str(cpus), "memory": quantity_mib(nbytes)}
    return {"requests": dict(asked), "limits": dict(asked)}


def inference_service(name: str, storage_uri: str, repo: Path, cpus: int, measured_on: dict | None = None) -> dict:
    """KServe's ``InferenceService`` serving the Triton repository ``repo`` (uploaded to ``storage_uri``)."""
    annotations = {"attnkit/threads": str(cpus)}
    if measured_on:
        annotations["attnkit/measured-on"] = f"{measured_on.get('cpu', '?')} ({measured_on.get('class', '?')})"
    memory = 2 * tree_bytes(repo) + SERVER_OVERHEAD_BYTES
    return {
        "apiVersion": ISVC_API,
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "triton"},
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    "resources": resources(cpus, memory),
                    # the threads the model was measured with (onnxruntime and OpenVINO read these at start)
                    "env": [{"name": "OMP_NUM_THREADS", "value": str(cpus)}],
                }
            }
        },
    }


def bench_job(name: str, image: str, command: list[str], cells: int, cpus: int, memory: int, claim: str,
              mount: str = "/data") -> dict:  # fmt: skip
    """A Kubernetes Indexed ``Job``: ``cells`` pods, pod ``i`` running ``command`` (which reads
    ``$JOB_COMPLETION_INDEX``), each with ``cpus`` CPUs asked and capped alike, the PersistentVolumeClaim ``claim``
    mounted at ``mount`` for the model and the results."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "attnkit-bench"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": cells,
            "parallelism": cells,
            "backoffLimit": 0,  # a failed cell is reported, not measured again on a different node
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "attnkit-bench"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "bench",
                            "image": image,
                            "command": command,
                            "resources": resources(cpus, memory),
                            "volumeMounts": [{"name": "data", "mountPath": mount}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        },
    }


def to_yaml(doc: dict) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False)


KUBE_CHECK = Path(__file__).with_name("kube_check.py")


def validate(paths: list[Path], env=None) -> dict[str, list[str]]:
    """``{file: [problems]}`` of each manifest against KServe's and Kubernetes' Python models, checked by
    :mod:`attnkit.serving.kube_check` in the serving venv (``env``, default :meth:`ServingEnv.locate`).

    Raises:
        ServingEnvError: no serving venv, or one built without kserve (names the fix).
    """
    import json
    import subprocess

    from .env import ServingEnv, ServingEnvError

    env = env or ServingEnv.locate()
    if not env.info.get("kserve"):
        raise ServingEnvError(
            f"the serving environment at `{env.root}` has no kserve to check manifests with.",
            flag="--venv",
            hint="Rebuild it with `attnkit serve setup --force` (make serving).",
        )
    proc = subprocess.run([str(env.python), str(KUBE_CHECK), *map(str, paths)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ServingEnvError(f"the manifest check failed to run: {last}", flag="--venv")
    return json.loads(lines[-1])
