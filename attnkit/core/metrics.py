"""Task metrics beside rel L2 and cosine: what a reduced precision does to the answers a user acts on.

On the held-out rows of the user's data (:mod:`attnkit.core.data`), per runner, against eager fp32 Keras on the
same rows:

- ``top1_agreement``: the share of real positions (padding left out) where the runner's argmax equals fp32's;
- ``accuracy``: against ``labels`` where the data has them (one per row for ``(rows, classes)`` outputs, one per
  position for ``(rows, seq, classes)``);
- ``next_token_accuracy`` and ``perplexity``: for a language model (token ids in, logits over the same vocabulary
  out), position t predicting token t+1, over positions where both are real.

The gate follows MLPerf Inference's rule: a reduced precision is right only where it keeps at least
``target`` (default :data:`ACCURACY_TARGET`, 99 %) of fp32's value of the gating metric: accuracy against labels
where given, else next-token accuracy for a language model, each where fp32 scores above zero on it, else top-1
agreement with fp32 (fp32's own is 1).
Outputs that are not class scores (an encoder's hidden states) have no task metric: their gate stays rel L2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: MLPerf Inference's rule: a lower precision counts only at >= 99 % of the fp32 model's accuracy
ACCURACY_TARGET = 0.99


@dataclass
class TaskMetrics:
    """One runner's task metrics on the held-out rows (None where a metric does not apply)."""

    output: str
    positions: int
    top1_agreement: float | None = None
    accuracy: float | None = None
    next_token_accuracy: float | None = None
    perplexity: float | None = None

    def gating(self, fp32: TaskMetrics) -> tuple[str, float, float] | None:
        """``(metric, value, fp32's value)`` the gate compares: accuracy against labels, else next-token accuracy,
        where fp32 scores above zero on it (a random-weight model's next-token accuracy is 0: nothing to keep),
        else top-1 agreement with fp32 (fp32's own is 1)."""
        for name in ("accuracy", "next_token_accuracy"):
            value, base = getattr(self, name), getattr(fp32, name)
            if value is not None and base:
                return name, value, base
        return ("top1_agreement", self.top1_agreement, 1.0) if self.top1_agreement is not None else None


def class_output(spec, outputs: dict[str, np.ndarray]) -> str | None:
    """The output holding class scores: ``logits`` where there is one, else None (hidden states have no task)."""
    names = [n for n in spec.output_names if n in outputs]
    return next((n for n in names if "logits" in n), None)


def _output_side(spec, role: str) -> str | None:
    """The input of ``role`` on the side the logits are over: a seq2seq model's decoder input (its encoder's ids
    and mask are not the positions it predicts), else the one there is."""
    names = [t.name for t in spec.inputs if t.role == role]
    return next((n for n in names if "decoder" in n), names[-1] if names else None)


def _real_positions(spec, feeds: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask over the output's leading axes: the padding mask where there is one, else all True."""
    mask_name = _output_side(spec, "padding_mask")
    lead = shape[:-1]
    if mask_name is None or len(lead) < 2:
        return np.ones(lead, bool)
    return feeds[mask_name].astype(bool)[:, : lead[1]]


def task_metrics(
    spec, feeds: list[dict], reference: list[dict], got: list[dict], labels: list | None
) -> TaskMetrics | None:
    """Task metrics of ``got`` against fp32's ``reference`` on the batches ``feeds`` (None: no class output)."""
    name = class_output(spec, reference[0])
    if name is None:
        return None
    agree = total = 0
    correct = labelled = 0
    nt_correct = nt_total = 0
    nll = 0.0
    tokens_name = _output_side(spec, "tokens")
    vocab = next((t.high for t in spec.inputs if t.name == tokens_name), None)
    for i, (f, ref, out) in enumerate(zip(feeds, reference, got)):
        r, g = np.asarray(ref[name], np.float32), np.asarray(out[name], np.float32)
        real = _real_positions(spec, f, r.shape)
        agree += int(((r.argmax(-1) == g.argmax(-1)) & real).sum())
        total += int(real.sum())
        if labels is not None:
            lab = np.asarray(labels[i])
            hit = g.argmax(-1) == lab
            keep = real if hit.shape == real.shape else np.ones(hit.shape, bool)
            correct += int((hit & keep).sum())
            labelled += int(keep.sum())
        if tokens_name and g.ndim == 3 and g.shape[-1] == vocab and g.shape[1] > 1:
            target = f[tokens_name][:, 1 : g.shape[1]]
            both = real[:, :-1] & real[:, 1:]
            logp = g[:, :-1] - _logsumexp(g[:, :-1])
            picked = np.take_along_axis(logp, target[..., None].astype(np.int64), -1)[..., 0]
            nt_correct += int(((g[:, :-1].argmax(-1) == target) & both).sum())
            nt_total += int(both.sum())
            nll -= float(picked[both].sum())
    return TaskMetrics(
        name,
        total,
        top1_agreement=agree / total if total else None,
        accuracy=correct / labelled if labelled else None,
        next_token_accuracy=nt_correct / nt_total if nt_total else None,
        perplexity=float(np.exp(nll / nt_total)) if nt_total else None,
    )


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(-1, keepdims=True))


def keeps(fp32: TaskMetrics, lowered: TaskMetrics, target: float = ACCURACY_TARGET) -> tuple[bool, str]:
    """Whether ``lowered`` keeps ``target`` of fp32's gating metric, and the line that says so."""
    gate = lowered.gating(fp32)
    if gate is None:
        return True, "no task metric"
    metric, value, base = gate
    kept = value / base
    ok = kept >= target
    return (
        ok,
        f"{metric.replace('_', ' ')} {kept:.2%} of fp32's ({value:.4f} / {base:.4f}) {'>=' if ok else '<'} {target:.0%}",
    )
