"""The example alerting rules (`serving/alerts.yml`) name metrics the server really exports.

No Prometheus runs here, so the rules are not evaluated: the file is parsed as
Prometheus reads it (groups of rules with `alert`, `expr`, `for`), every metric
name in each expression must be on the page of a server that answered a
canary and a stable version with request logging on, and each series a rule
selects by label must exist with the labels the rule joins on.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from core.config import REPO_ROOT
from serving.server import start
from serving.tensors import proto_from_array
from tests.serving.canary_models import MODEL, build_rollout, serving_config

RULES = Path(REPO_ROOT) / "serving" / "alerts.yml"
METRIC = re.compile(r"\b(fmnist_[a-z_]+|:tensorflow:[a-z_:]+)")
SELECTOR = re.compile(r"(fmnist_[a-z_]+)\{([^}]*)\}")


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """Sample name -> its samples, after traffic to both versions (the canary has an estimator)."""
    root = tmp_path_factory.mktemp("alerts")
    running = start(serving_config(root, build_rollout(root), canary_percent=50), rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for label in ("stable", "canary", "canary"):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL
            request.model_spec.signature_name = "predict_images"
            request.model_spec.version_label = label
            request.inputs["images"].CopyFrom(proto_from_array(np.zeros((8, 28, 28), np.uint8)))
            stub.Predict(request, timeout=30)
        url = f"http://127.0.0.1:{running.rest_port}/monitoring/prometheus/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        channel.close()
        running.stop()
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_every_rule_is_an_alert_with_an_expression_a_duration_and_a_summary():
    found = rules()
    assert {r["alert"] for r in found} == {"EstimatedAccuracyBelowFloor", "CanaryErrorRateAboveStable"}
    for rule in found:
        assert rule["expr"].strip() and METRIC.search(rule["expr"]), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_every_metric_the_rules_name_is_on_the_page_with_the_labels_they_use(page):
    for rule in rules():
        for name in METRIC.findall(rule["expr"]):
            assert name in page, f"{rule['alert']}: {name} is not on the page"
            for sample in page[name]:
                assert {"model_name", "version", "label"} <= set(sample.labels), name
        for name, selector in SELECTOR.findall(rule["expr"]):
            wanted = dict(re.findall(r'(\w+)="([^"]*)"', selector))
            matching = [s for s in page[name] if all(s.labels.get(k) == v for k, v in wanted.items())]
            assert matching, f"{rule['alert']}: no {name} series with {wanted}"


def test_the_accuracy_rule_joins_the_estimate_with_its_window_size(page):
    high = {(s.labels["model_name"], s.labels["version"]) for s in page["fmnist_estimated_accuracy_high"]}
    size = {(s.labels["model_name"], s.labels["version"]) for s in page["fmnist_estimated_accuracy_images"]}
    assert high == size == {(MODEL, "2")}
