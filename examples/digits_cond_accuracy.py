"""How recognisable a class-conditional digits flow's samples are (issue 23).

A scikit-learn classifier (an RBF support-vector machine on the 64 pixel values, scaled to [0, 1]) is
trained on the digits training split the runtime uses (the same seeded 1,500 / 297 split as `train`);
it then classifies ``--per-class`` samples of each class drawn from a trained conditional run
(``augflow-dsl train specs/digits-cond.flow``). Reported: the accuracy against the label asked for,
a confusion matrix, and, for scale, the classifier's accuracy on the 297 real test digits.

    python examples/digits_cond_accuracy.py runs/digits-cond/readme [--per-class 100] [--temperature 1.0]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def classifier(train_x: torch.Tensor, train_y: torch.Tensor, levels: int):
    """An RBF SVM on pixels / (levels - 1) (scikit-learn's digits example's model)."""
    from sklearn.svm import SVC
    return SVC(gamma="scale", C=10.0).fit(train_x.flatten(1).float().numpy() / (levels - 1), train_y.numpy())


def accuracy(clf, x: torch.Tensor, y: torch.Tensor, levels: int) -> tuple[float, list[list[int]]]:
    """Accuracy of ``clf`` on images ``x`` against labels ``y``, and the confusion matrix (rows: y)."""
    from sklearn.metrics import confusion_matrix
    pred = clf.predict(x.flatten(1).float().clamp(0, levels - 1).numpy() / (levels - 1))
    return float((pred == y.numpy()).mean()), confusion_matrix(y.numpy(), pred, labels=list(range(10))).tolist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run folder or checkpoint of a class-conditional digits spec")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import augflow_dsl as af
    from augflow_dsl.language.datasets import spec_condition
    from augflow_dsl.runtime.data import open_dataset
    from augflow_dsl.runtime.sampling import condition_for, generate, top_level

    model, spec, meta = af.load_model(a.run)
    if not getattr(model, "conditional", False) or model.condition.classes != 10:
        print(f"error: {a.run} is not a 10-class conditional model", file=sys.stderr)
        return 1
    seed = int((meta.get("train") or {}).get("seed", 0))
    data = spec.data.model_copy(update={"labels": True})
    source = open_dataset(data, None, False, seed, **spec_condition(spec))
    (xtr, ytr), (xte, yte) = (tuple(torch.stack(t) for t in zip(*[s[i] for i in range(len(s))]))
                              for s in (source.train, source.test))
    levels = top_level(spec.data.bits, spec.data.dataset) + 1  # the data set's own levels: digits hold 0..16
    clf = classifier(xtr, ytr, levels)
    real_acc, _ = accuracy(clf, xte, yte, levels)
    n = 10 * a.per_class
    y = condition_for(model, n, labels=range(10))
    samples = generate(model, n, temperature=a.temperature, seed=a.seed, y=y)
    acc, cm = accuracy(clf, samples, y, levels)
    out = {"run": str(a.run), "samples": n, "temperature": a.temperature, "sample_accuracy": acc,
           "real_test_accuracy": real_acc, "confusion": cm, "step": meta.get("step"), "weights": meta.get("weights")}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{n} conditional samples ({a.per_class} per class, T = {a.temperature:g}): "
              f"accuracy against the asked label {acc:.1%}")
        print(f"the same classifier on the {len(yte)} real test digits: {real_acc:.1%}")
        print("confusion (rows: label asked for, columns: predicted):")
        for k, row in enumerate(cm):
            print(f"  {k}: " + " ".join(f"{v:3d}" for v in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
