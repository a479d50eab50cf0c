"""Check Kubernetes manifests against the official Python models: KServe's (``kserve.models``, e.g.
``V1beta1InferenceService``) and Kubernetes' (``kubernetes.client``, e.g. ``V1Job``).

Runs as a script in the serving venv (where ``kserve`` and ``kubernetes`` are installed; attnkit's own venv has
neither): ``python kube_check.py FILE.yaml ...`` prints one JSON object, ``{file: [problems]}``, and exits 1 when
any file has a problem. Stand-alone on purpose: it imports nothing from attnkit.

What a model check catches: each document is built into its kind's generated model class, every nested object
by the class the schema names (:func:`build`): a key the schema does not have, a value of the wrong type, a
required field missing or a value outside an enumeration is a problem, named by its path. On top of the schema,
what attnkit promises: requests equal limits on every container (the CPUs a result was measured with).
"""

from __future__ import annotations

import json
import sys

MODELS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): ("kserve", "V1beta1InferenceService"),
    ("batch/v1", "Job"): ("kubernetes", "V1Job"),
}


PRIMITIVES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "object": (object,)}


def _klass(name: str):
    """A generated model class by name: KServe's models reference Kubernetes' (V1ObjectMeta, V1Container...)."""
    import kserve.models
    import kubernetes.client

    klass = getattr(kserve.models, name, None) or getattr(kubernetes.client, name, None)
    if klass is None:
        raise TypeError(f"no model class {name}")
    return klass


def build(data, typ: str, path: str, problems: list[str]):
    """``data`` as an instance of the OpenAPI type ``typ``, by the generated classes' own ``openapi_types`` and
    ``attribute_map`` (the walk their ApiClient does, across both packages, with strict primitives); a key the
    schema lacks or a value of the wrong type is appended to ``problems``. The classes' constructors enforce
    required fields and enumerations (ValueError)."""
    if typ.lower().startswith("list["):  # list[T] (older generators) or List[T]
        if not isinstance(data, list):
            problems.append(f"{path}: a {type(data).__name__}, the schema wants a list")
            return None
        return [build(x, typ[5:-1], f"{path}[{i}]", problems) for i, x in enumerate(data)]
    if typ.startswith(("dict(", "Dict[")):  # dict(K, V) or Dict[K, V]
        value_type = typ[5:-1].split(",", 1)[1].strip()
        if not isinstance(data, dict):
            problems.append(f"{path}: a {type(data).__name__}, the schema wants a mapping")
            return None
        return {k: build(v, value_type, f"{path}.{k}", problems) for k, v in data.items()}
    if typ in PRIMITIVES:
        wrong = isinstance(data, bool) and typ != "bool" and typ != "object"
        if wrong or not isinstance(data, PRIMITIVES[typ]):
            problems.append(f"{path}: {data!r} is not {typ}")
        return data
    klass = _klass(typ)
    if not isinstance(data, dict):
        problems.append(f"{path}: a {type(data).__name__}, the schema wants {typ}")
        return None
    by_key = {key: attr for attr, key in klass.attribute_map.items()}
    problems += [f"{path}.{k}: not in {typ}'s schema" for k in data if k not in by_key]
    kwargs = {by_key[k]: build(v, klass.openapi_types[by_key[k]], f"{path}.{k}", problems)
              for k, v in data.items() if k in by_key}  # fmt: skip
    return klass(**kwargs)


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc.get("kind") == "InferenceService":
        predictor = spec.get("predictor", {})
        return [predictor["model"]] if "model" in predictor else list(predictor.get("containers", []))
    return list(spec.get("template", {}).get("spec", {}).get("containers", []))


def check(doc: dict) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in MODELS:
        return [f"apiVersion/kind {key} is none of {sorted(MODELS)}"]
    _, name = MODELS[key]
    problems: list[str] = []
    try:
        build(doc, name, name, problems)
    except (ValueError, TypeError) as e:  # a required field missing, a value outside an enumeration
        problems.append(f"{name}: {e}")
    for c in _containers(doc):
        res = c.get("resources") or {}
        if not res.get("limits") or res.get("requests") != res.get("limits"):
            problems.append(f"container {c.get('name', '(model)')}: requests {res.get('requests')} != limits "
                            f"{res.get('limits')}")  # fmt: skip
    return problems


def main(paths: list[str]) -> int:
    import yaml

    report = {}
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        report[path] = [p for d in docs for p in check(d)] if docs else ["no document"]
    print(json.dumps(report))
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
