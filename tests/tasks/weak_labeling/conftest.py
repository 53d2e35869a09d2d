"""What the weak-labeling tests share: config overrides that point at `store_cfg`'s store."""


def store_overrides(cfg) -> dict:
    """Overrides for a config on the store, classes, gold and MLflow store of `cfg`."""
    return {
        "store.root": cfg.store.root,
        "taxonomy.classes": list(cfg.taxonomy.classes),
        "gold.fraction": cfg.gold.fraction,
        "mlflow.tracking_uri": cfg.mlflow.tracking_uri,
    }
