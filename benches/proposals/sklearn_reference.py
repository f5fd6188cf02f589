"""The data README's centralized baseline, the same on hashed features, and paired bootstraps.

Reproduces the pooled TF-IDF + logistic regression baseline of fl-client/data/proposals/README.md
(word 1-2-grams, sublinear tf, C = 4, balanced classes) on the shipped split, the same model on
daofl's hashed representation (2^18 buckets, first 4,096 tokens, no sign hashing), and, for every
`fl-client predict` output given on the command line, its outcome macro-F1 on the test split and a
paired bootstrap of its difference from the baseline (the same resampled test proposals for both).

    python3 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn
    /tmp/skl/bin/python benches/proposals/sklearn_reference.py [predictions.jsonl ...]

Run from the repository root. Nothing here is needed by the tests.
"""

import gzip
import json
import sys

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

DATA = "fl-client/data/proposals/"
rows = [json.loads(line) for line in gzip.open(DATA + "proposals.jsonl.gz")]
test_ids = set(json.load(open(DATA + "test_ids.json")))
decided = [r for r in rows if r["label"] in ("accepted", "rejected")]
key = lambda r: f"{r['community']}:{r['id']}"
train = [r for r in decided if key(r) not in test_ids]
test = [r for r in decided if key(r) in test_ids]
text = lambda r: r["title"] + "\n" + r["text"]
y_train = np.array([r["label"] == "rejected" for r in train], dtype=int)
y_test = np.array([r["label"] == "rejected" for r in test], dtype=int)


def fit(x_train, x_test, c=4.0):
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    return model.fit(x_train, y_train).predict(x_test)


def report(name, predicted):
    print(f"{name:<44} accuracy {accuracy_score(y_test, predicted):.3f}  "
          f"macro-F1 {f1_score(y_test, predicted, average='macro'):.3f}")


exact = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
baseline = fit(exact.fit_transform(map(text, train)), exact.transform(map(text, test)))
report("exact 1-2-gram vocabulary (data README)", baseline)

cut = lambda r: " ".join(text(r).split()[:4096])
hashed = HashingVectorizer(ngram_range=(1, 2), n_features=2**18, alternate_sign=False, norm=None)
tfidf = TfidfTransformer(sublinear_tf=True)
x_train = tfidf.fit_transform(hashed.transform(map(cut, train)))
x_test = tfidf.transform(hashed.transform(map(cut, test)))
for c in (1.0, 4.0, 16.0):
    report(f"hashed 2^18, 4,096 tokens, C = {c:g}", fit(x_train, x_test, c))

rng = np.random.default_rng(0)
resamples = rng.integers(0, len(test), (1000, len(test)))
base_f1 = f1_score(y_test, baseline, average="macro")
for path in sys.argv[1:]:
    p = {}
    for line in open(path):
        o = json.loads(line)
        p[f"{o['community']}:{o['id']}"] = o["p_accepted"]
    predicted = np.array([int(p[key(r)] < 0.5) for r in test])
    diffs = np.array([
        f1_score(y_test[i], predicted[i], average="macro")
        - f1_score(y_test[i], baseline[i], average="macro")
        for i in resamples
    ])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    mf1 = f1_score(y_test, predicted, average="macro")
    print(f"{path}: macro-F1 {mf1:.4f}, minus baseline {mf1 - base_f1:+.4f}, "
          f"95% CI [{lo:+.3f}, {hi:+.3f}], share of resamples >= baseline {np.mean(diffs >= 0):.2f}")
