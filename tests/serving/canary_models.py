"""A staged rollout to serve in tests: two versions of the pixels model, labelled `stable` and `canary`.

Version 1 is stable and version 2 the canary (`models.config` with a
specific policy and both labels, as the Pusher writes it); version 2 carries an
accuracy estimator (`assets.extra/accuracy_estimate.json`, as the Trainer will
write it), version 1 does not, so a test sees both cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.accuracy_estimate import estimator_path, fit, save_estimator
from core.config import ServingConfig
from core.vocabulary import NUM_CLASSES
from tests.serving import pixels_model

MODEL = "fashion_mnist"
STABLE, CANARY = 1, 2
MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'


def held_out(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated-looking held-out answers: probabilities [n, 10] and labels right about 80 % of the time."""
    generator = np.random.default_rng(seed)
    probabilities = generator.dirichlet(np.full(NUM_CLASSES, 0.3), size=n)
    right = generator.random(n) < probabilities.max(axis=1)
    labels = np.where(right, probabilities.argmax(axis=1), generator.integers(0, NUM_CLASSES, n))
    return probabilities, labels


def write_models_config(path: Path, base: Path, stable: int, canary: int, versions=(STABLE, CANARY)) -> Path:
    listed = " ".join(f"versions: {v}" for v in versions)
    path.write_text(
        "model_config_list {\n  config {\n"
        f'    name: "{MODEL}"\n    base_path: "{base / MODEL}"\n    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ specific {{ {listed} }} }}\n"
        f'    version_labels {{ key: "stable" value: {stable} }}\n'
        f'    version_labels {{ key: "canary" value: {canary} }}\n'
        "  }\n}\n"
    )
    return path


def build_rollout(root: Path) -> Path:
    """`root/models/fashion_mnist/{1,2}` and `root/models.config` (stable 1, canary 2); returns the config."""
    base = root / "models"
    pixels_model.build(str(base / MODEL / str(STABLE)))
    pixels_model.build(str(base / MODEL / str(CANARY)), seed=1)  # other weights: answers tell them apart
    save_estimator(fit(*held_out()), estimator_path(str(base / MODEL / str(CANARY))))
    return write_models_config(root / "models.config", base, STABLE, CANARY)


def serving_config(root: Path, config_file: Path, **fields) -> ServingConfig:
    """Both ports free, metrics on, request logging under `root/logs`; `fields` on top."""
    monitoring = root / "monitoring.config"
    monitoring.write_text(MONITORING)
    return ServingConfig(
        model_config_file=str(config_file),
        port=0,
        rest_api_port=0,
        monitoring_config_file=str(monitoring),
        request_log_dir=str(root / "logs"),
        **fields,
    )
