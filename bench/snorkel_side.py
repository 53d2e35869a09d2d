"""The Snorkel 0.10 half of bench/weak_labeling. It runs in Snorkel's own environment
(bench/.venv-snorkel: Snorkel 0.10 needs NumPy < 2 and pandas < 2.3, which semilabel's
environment does not have), so it imports nothing from semilabel but bench.wl_rules.

    python -m bench.snorkel_side label-model IN.npz OUT.npz     # from the repo root
    python -m bench.snorkel_side apply IN.parquet PARAMS.npz EXTERNAL.csv OUT.npz
"""

from __future__ import annotations

import io
import json
import sys
import time

import numpy as np

from bench.wl_rules import hollow_is_zero, thin_is_one


def label_model(inp: str, out: str) -> None:
    """Fit Snorkel's LabelModel on L (no labels) and predict, as its tutorial does."""
    from snorkel.labeling.model import LabelModel

    data = np.load(inp)
    L, k = data["L"].astype(np.int64), int(data["k"])
    start = time.perf_counter()
    model = LabelModel(cardinality=k, verbose=False)
    model.fit(L_train=L, n_epochs=500, lr=0.01, log_freq=100, seed=0, progress_bar=False)
    pred = model.predict(L, tie_break_policy="abstain")
    np.savez(
        out,
        pred=pred,
        weights=model.get_weights(),
        seconds=np.array(time.perf_counter() - start),
    )


def apply(inp: str, params_path: str, external_csv: str, out: str) -> None:
    """The five functions as Snorkel labeling functions, one row at a time, with a
    memoized preprocessor that decodes each row's PNG once."""
    import pandas as pd
    from PIL import Image
    from snorkel.labeling import PandasLFApplier, labeling_function
    from snorkel.preprocess import preprocessor

    p = np.load(params_path)
    ref, ref_labels = p["ref"], p["ref_labels"]
    protos, present = p["protos"], p["present"]
    k_nn, min_agreement, min_margin = int(p["k"]), float(p["min_agreement"]), float(p["min_margin"])
    n_classes = int(p["n_classes"])
    ext = pd.read_csv(external_csv, dtype={"example_id": str, "label": str})
    vendor = {e: int(lab) for e, lab in zip(ext.example_id, ext.label, strict=True)}

    @preprocessor(memoize=True, memoize_key=lambda x: x.example_id)
    def decode(x):
        x.pixels = np.asarray(Image.open(io.BytesIO(x.image)).convert("L"))[None, None]
        e = x.pixels.reshape(-1).astype(np.float32) / 255.0
        x.emb = e / max(float(np.linalg.norm(e)), 1e-8)
        return x

    @labeling_function(pre=[decode])
    def knn(x):
        sim = ref @ x.emb
        nn = np.argpartition(-sim, k_nn - 1)[:k_nn]
        counts = np.bincount(ref_labels[nn], minlength=n_classes)
        best = int(counts.argmax())
        return best if counts[best] / k_nn >= min_agreement else -1

    @labeling_function(pre=[decode])
    def prototype(x):
        d = np.linalg.norm(protos - x.emb, axis=1)
        order = np.argsort(d)
        d1, d2 = d[order[0]], d[order[1]]
        return int(present[order[0]]) if (d2 - d1) / max(d1, 1e-8) >= min_margin else -1

    @labeling_function(pre=[decode])
    def thin_one(x):
        return int(thin_is_one(x.pixels)[0])

    @labeling_function(pre=[decode])
    def hollow_zero(x):
        return int(hollow_is_zero(x.pixels)[0])

    @labeling_function()
    def vendor_labels(x):
        return vendor.get(x.example_id, -1)

    df = pd.read_parquet(inp, columns=["example_id", "image"])
    lfs = [knn, prototype, thin_one, hollow_zero, vendor_labels]
    start = time.perf_counter()
    L = PandasLFApplier(lfs=lfs).apply(df, progress_bar=False)
    seconds = time.perf_counter() - start
    np.savez(out, L=L, seconds=np.array(seconds), ids=np.array(df.example_id.tolist()))


def main(argv: list[str]) -> int:
    if argv[:1] == ["label-model"] and len(argv) == 3:
        label_model(*argv[1:])
    elif argv[:1] == ["apply"] and len(argv) == 5:
        apply(*argv[1:])
    elif argv[:1] == ["versions"]:
        import pandas
        import snorkel

        print(
            json.dumps(
                {
                    "snorkel": snorkel.__version__,
                    "pandas": pandas.__version__,
                    "numpy": np.__version__,
                }
            )
        )
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
