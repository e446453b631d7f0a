"""Labels steer (issue #13): one labelled model on Shakespeare + WikiText-2.

Trains one char-level model on two corpora of different kinds, each a label
(``--labels-from folders``): tiny-shakespeare's ``train.txt`` and WikiText-2's
``wiki.train.tokens`` (``../shared/data``), each cut to ``--chars`` characters so that the labels
are balanced, and into documents of about ``--doc-chars`` characters (at line breaks, one file
each): the label's token starts every document, so the model meets it often enough to learn
it (one file per label would show it once per epoch). Then:

1. **Steering**: ``--samples`` samples per label (prompt "", the label's token first), each
   classified by a character n-gram naive Bayes trained here on the two training texts (not
   the model). Floor: >= 95 % classified as the label asked for.
2. **Cost of sharing**: each label's validation loss (nats/char on ``val.txt`` /
   ``wiki.valid.tokens``, cut to ``--val-chars``; scored in one stateful pass from
   ``bos, <|label:X|>``) against a model of the same size trained on that corpus alone for the
   same ``--budget`` seconds.

Three trainings of ``--budget`` seconds each. The lead's full run:

    python benchmarks/labels_steer.py --budget 600
    OMP_NUM_THREADS=1 python benchmarks/labels_steer.py --steps 2500 --model hidden_size=256 \\
        --model num_layers=1 --model embedding_size=32 --name labels_steer_steps2500_h256
        # load-independent: a smaller model for a fixed number of steps (shared machines)
    python benchmarks/labels_steer.py --budget 2 --chars 20000 --val-chars 5000 \\
        --samples 5 --preset tiny --name labels_steer_smoke      # a smoke run (seconds)

Tiny-shakespeare stands for "the built-in Shakespeare corpus" of the issue: the same author,
with a standard validation split, and present wherever ``../shared/data`` is.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import SHARED_DATA, write_result

CORPORA = {
    "shakespeare": ("tiny-shakespeare/train.txt", "tiny-shakespeare/val.txt"),
    "wikitext": ("wikitext-2/wiki.train.tokens", "wikitext-2/wiki.valid.tokens"),
}


class NgramBayes:
    """Multinomial naive Bayes over character n-grams (n = 1..N), add-one smoothing."""

    def __init__(self, texts: dict[str, str], n: int = 4):
        self.n = n
        self.counts = {label: self._grams(text) for label, text in texts.items()}
        self.totals = {label: sum(c.values()) for label, c in self.counts.items()}
        self.vocab = len(set().union(*self.counts.values()))

    def _grams(self, text: str) -> Counter:
        n = len(text)
        return Counter(text[i : i + k] for k in range(1, self.n + 1) for i in range(n - k + 1))

    def classify(self, text: str) -> str:
        grams = self._grams(text)
        scores = {
            label: sum(
                k * math.log((counts.get(g, 0) + 1) / (self.totals[label] + self.vocab))
                for g, k in grams.items()
            )
            for label, counts in self.counts.items()
        }
        return max(scores, key=scores.get)


def documents(text: str, size: int) -> list[str]:
    """``text`` cut at line breaks into documents of about ``size`` characters."""
    docs, start = [], 0
    while start < len(text):
        cut = text.find("\n", start + size)
        end = len(text) if cut < 0 else cut + 1
        docs.append(text[start:end])
        start = end
    return docs


def val_loss(model, docs: list[str], label: str | None, seq_len: int = 512) -> float:
    """Nats per character of ``docs``, the text's tokens only, scored as each model trains:
    the labelled model each document from a fresh state after ``bos`` and its label
    (training/label_rows.py), a single-corpus model in one stateful pass from ``bos``."""
    import torch
    import torch.nn.functional as F

    tok = model.tokenizer
    if label is not None:
        from types import SimpleNamespace

        from lstmgen.training.label_rows import evaluate_label_rows

        ids = [
            t for doc in docs for t in (tok.label_id(label), *tok.encode(doc, unknown="replace"))
        ]
        data = SimpleNamespace(tokens=np.asarray(ids, dtype=np.int64), chars=0)
        return evaluate_label_rows(model, data, seq_len)["val_loss"]
    ids = [tok.bos_id] + [t for doc in docs for t in tok.encode(doc, unknown="replace")]
    seq = torch.tensor([ids], dtype=torch.long)  # (1, N)
    total, state = 0.0, None
    with torch.inference_mode():
        model.eval()
        for s in range(0, seq.shape[1] - 1, seq_len):
            x, y = seq[:, s : s + seq_len], seq[:, s + 1 : s + seq_len + 1]
            x = x[:, : y.shape[1]]
            logits, state = model(x, state)  # (1, T, V)
            total += F.cross_entropy(logits[0].float(), y[0], reduction="sum").item()
    return total / (len(ids) - 1)


def label_effect(model, docs: list[str], label: str, other: str, chars: int) -> dict:
    """Nats/char of the first ``chars`` characters of each document, from generation's start
    (fresh state, ``bos``, a label), after the right label and after the other one: how much
    the label moves the model where a sample starts (0: it is ignored)."""
    import torch
    import torch.nn.functional as F

    tok = model.tokenizer
    out = {}
    with torch.inference_mode():
        model.eval()
        for name, head in (("right", label), ("wrong", other)):
            total = count = 0
            for doc in docs:
                body = tok.encode(doc[:chars], unknown="replace")
                seq = torch.tensor([[tok.bos_id, tok.label_id(head), *body]])
                logits, _ = model(seq[:, :-1])  # (1, N - 1, V)
                total += F.cross_entropy(logits[0, 1:], seq[0, 2:], reduction="sum").item()
                count += len(body)
            out[name] = total / count
    out["wrong_minus_right"] = out["wrong"] - out["right"]
    return out


def snippets(text: str, n: int, size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [text[s : s + size] for s in (rng.randrange(len(text) - size) for _ in range(n))]


def markdown(r: dict) -> str:
    """The README table (render_readme.py)."""
    from common import measured

    rows = [
        "| label | classified as asked | val loss, labelled model | val loss, that corpus alone |",
        "|---|---|---|---|",
    ]
    for label, v in r["labels"].items():
        rows.append(
            f"| {label} | {v['classified_as_asked']:.0%} | {v['val_loss_labelled']:.4f} | "
            f"{v['val_loss_alone']:.4f} |"
        )
    verdict = "meets" if r["passes_floor"] else "misses"
    settings = r["settings"]
    budget = (
        f"{settings['steps']:,} steps" if settings.get("steps") else f"{settings['budget']:.0f} s"
    )
    model = f" ({', '.join(settings['model'])})" if settings.get("model") else ""
    return (
        "\n".join(rows)
        + f"\n\n{r['classified_as_asked']:.1%} of {settings['samples']} samples per label "
        f"classified as asked ({verdict} the 95 % floor); {budget} of training per "
        f"model{model}. {measured(r)}."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per model")
    ap.add_argument(
        "--steps", type=int, default=0,
        help="train each model this many steps instead (0: --budget seconds); load-independent",
    )  # fmt: skip
    ap.add_argument("--chars", type=int, default=1_000_000, help="training chars per corpus")
    ap.add_argument("--val-chars", type=int, default=100_000, help="validation chars per corpus")
    ap.add_argument("--samples", type=int, default=100, help="samples per label")
    ap.add_argument(
        "--doc-chars", type=int, default=2000, help="each corpus is cut into documents this long"
    )
    ap.add_argument("--sample-tokens", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument(
        "--model", action="append", default=[], metavar="KEY=INT",
        help="a ModelConfig size over the preset's (e.g. hidden_size=256), for step-budgeted runs",
    )  # fmt: skip
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="labels_steer")
    args = ap.parse_args()

    import torch

    from lstmgen import LanguageModel, ModelConfig, TrainConfig, Trainer
    from lstmgen.config import PRESETS

    torch.set_num_threads(max(1, torch.get_num_threads()))
    texts, vals = {}, {}
    for label, (train, val) in CORPORA.items():
        texts[label] = (SHARED_DATA / train).read_text(encoding="utf-8")[: args.chars]
        vals[label] = (SHARED_DATA / val).read_text(encoding="utf-8")[: args.val_chars]
    preset = PRESETS[args.preset]
    budget = {"max_steps": args.steps} if args.steps else {"max_time": args.budget}
    common = {**preset["train"], **budget, "device": args.device, "seed": 1}
    common.update(sample_tokens=0, eval_every=10**9)  # one evaluation, at the end
    sizes = dict(kv.split("=", 1) for kv in args.model)
    model_cfg = ModelConfig(**{**preset["model"], **{k: int(v) for k, v in sizes.items()}})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs = {}  # a label token starts each document: a label needs many of them to be learnt
        for split, content in (("train", texts), ("valid", vals)):
            for label, text in content.items():
                (root / split / label).mkdir(parents=True)
                docs[split, label] = documents(text, args.doc_chars)
                for i, doc in enumerate(docs[split, label]):
                    (root / split / label / f"{i:06d}.txt").write_text(doc, encoding="utf-8")
        began = time.perf_counter()
        cfg = TrainConfig(**common, labels_from="folders")
        steps = {}
        summary = Trainer.create(
            root / "labelled", [root / "train"], cfg, model_cfg, valid=[root / "valid"]
        ).fit()
        steps["labelled"] = summary["step"]
        labelled = LanguageModel.from_pretrained(root / "labelled")
        alone = {}
        for label in CORPORA:
            summary = Trainer.create(
                root / label, [root / "train" / label], TrainConfig(**common), model_cfg,
                valid=[root / "valid" / label],
            ).fit()  # fmt: skip
            steps[label] = summary["step"]
            alone[label] = LanguageModel.from_pretrained(root / label)
        trained = time.perf_counter() - began

        bayes = NgramBayes(texts)
        per_label = {}
        for label in CORPORA:
            other = next(o for o in CORPORA if o != label)
            samples = labelled.complete(
                "", n=args.samples, label=label, max_new_tokens=args.sample_tokens,
                temperature=args.temperature, seed=7,
            )  # fmt: skip
            got = Counter(bayes.classify(s) for s in samples)
            per_label[label] = {
                "classified_as_asked": got[label] / args.samples,
                "classified": dict(got),
                "val_loss_labelled": val_loss(labelled, docs["valid", label], label),
                "val_loss_alone": val_loss(alone[label], docs["valid", label], None),
                "example": samples[0][:200],
                # the diagnosis of issue #13: does the label move the model where a sample
                # starts, and does the classifier know real text of a sample's length?
                "label_effect": label_effect(
                    labelled, docs["valid", label][:50], label, other, args.sample_tokens
                ),
                "classifier_on_val": sum(
                    bayes.classify(t) == label
                    for t in snippets(vals[label], 200, args.sample_tokens)
                )
                / 200,
            }
            r = per_label[label]
            r["val_loss_cost"] = r["val_loss_labelled"] - r["val_loss_alone"]
    steer = sum(r["classified_as_asked"] for r in per_label.values()) / len(per_label)
    payload = {
        "settings": vars(args),
        "model": model_cfg.to_dict(),
        "classified_as_asked": steer,
        "floor": 0.95,
        "passes_floor": steer >= 0.95,
        "labels": per_label,
        "training_seconds": trained,
        "steps": steps,  # each model's training steps in its budget
        "notes": "val loss in nats/char, the text's tokens only: the labelled model scores each "
        "document from a fresh state after bos and its label (as it trains and generates), a "
        "single-corpus model in one stateful pass; label_effect: nats/char of each val "
        "document's first sample_tokens chars after the right and the wrong label from a fresh "
        "state; classifier_on_val: the share of 200 real val snippets of sample_tokens chars "
        "the classifier gets right; classifier: char 1-4-gram naive Bayes on the two training "
        "texts; each run records load_average_1m where the machine's load matters.",
    }
    out = write_result(args.name, payload)
    for label, r in per_label.items():
        print(
            f"{label}: {r['classified_as_asked']:.0%} classified as asked; val loss "
            f"{r['val_loss_labelled']:.4f} labelled vs {r['val_loss_alone']:.4f} alone; the "
            f"label moves the start by {r['label_effect']['wrong_minus_right']:.3f} nats/char"
        )
    print(f"steering {steer:.1%} (floor 95 %): {out}")


if __name__ == "__main__":
    main()
