"""Which version answers a request that names none: a share to the canary, the rest to stable.

TF Serving gives such a request the highest loaded version
(`ServableRequest::Latest` in `ServerCore::ServableRequestFromModelSpec`,
tensorflow_serving/model_servers/server_core.cc:841-869), which during a
staged rollout is the canary: every client that names no version would try
it at once. TF Serving has no traffic split (tensorflow/serving#788); here,
when the model's `stable` and `canary` labels name two different versions,
`canary_percent` of those requests go to the canary and the rest to stable.
A request naming a version or a label gets exactly that; with no canary
(no labels, or both on one version) nothing changes.

The split is sticky per client: a request carrying a client id (gRPC
metadata `x-client-id`, HTTP header `X-Client-Id`) is hashed with the model
and the canary's version into [0, 1), so one client sees one version for as
long as that canary runs (no answer flapping between two models), raising the
share only adds clients, and every replica of the server splits alike. A new
canary draws a new set of clients. A request without an id draws at random.

The decision is a pure function of the labels, the share and the client id;
`fmnist serve` reads the labels from its version manager, `fmnist log-proxy`
from the models.config its TF Serving reads, and forwards the choice as
`model_spec.version_label`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping

from tensorflow_serving.apis import model_pb2

STABLE, CANARY = "stable", "canary"  # the labels of the staged rollout (the release side writes them)
CLIENT_ID_KEY = "x-client-id"  # gRPC metadata key (lower case, as gRPC requires); HTTP: X-Client-Id
MAX_CLIENT_ID_BYTES = 256  # longer ids are cut before hashing: a client cannot make the server hash megabytes


def names_no_version(spec: model_pb2.ModelSpec) -> bool:
    """Whether a request leaves the version to the server (neither a number nor a label)."""
    return spec.WhichOneof("version_choice") is None


def client_key(model: str, canary: int, client_id: str) -> float:
    """A client's place in [0, 1) for this model's current canary: stable across processes and replicas."""
    text = f"{model}\0{canary}\0".encode() + client_id.encode("utf-8", "replace")[:MAX_CLIENT_ID_BYTES]
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") / 2**64


def client_id_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The `x-client-id` of a gRPC call's metadata, or None."""
    for key, value in metadata or ():
        if key == CLIENT_ID_KEY:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def label_of(labels: Mapping[str, int], version: int) -> str:
    """The label a version goes by, for metrics: stable before canary (the first push is both), else ""."""
    named = sorted(label for label, v in labels.items() if v == version)
    for preferred in (STABLE, CANARY):
        if preferred in named:
            return preferred
    return named[0] if named else ""


class TrafficSplit:
    """Sends `canary_percent` of the requests that name no version to the canary, the rest to stable."""

    def __init__(self, canary_percent: float, draw=random.random):
        if not 0.0 <= canary_percent <= 100.0:
            raise ValueError(f"canary_percent must be within 0..100, got {canary_percent}")
        self.share = canary_percent / 100.0
        self.draw = draw

    def label_for(self, model: str, labels: Mapping[str, int], client_id: str | None) -> str | None:
        """The label such a request goes to, or None when the model has no canary (TF Serving's rule)."""
        stable, canary = labels.get(STABLE), labels.get(CANARY)
        if stable is None or canary is None or stable == canary:
            return None
        key = client_key(model, canary, client_id) if client_id else self.draw()
        return CANARY if key < self.share else STABLE

    def route(
        self, spec: model_pb2.ModelSpec, labels: Mapping[str, int], client_id: str | None
    ) -> model_pb2.ModelSpec:
        """`spec` itself when it names a version or the model has no canary, else a copy naming the label."""
        if not names_no_version(spec):
            return spec
        label = self.label_for(spec.name, labels, client_id)
        if label is None:
            return spec
        routed = model_pb2.ModelSpec()
        routed.CopyFrom(spec)
        routed.version_label = label
        return routed
