"""ModelVerdict: the loop's last step; it writes what became of the run's model into the span ledger.

The span rules (`core/span_rules.py`) need to know, for each span, whether a
run finished with it and how the Evaluator judged the model whose window ended
with it: blessed, or refused against a served model (a span that only ever
gets refused there never trains again), or refused with nothing serving yet
(the floor: the window is too small, the span stays). This step reads the
Evaluator's blessing (TFX sets its `baseline_model` property only when a
baseline was compared, see `components/evaluator.py`) and the Pusher's
output, and appends one `model` record.
"""

from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.loop_state import span_of
from core.ledger import MODEL, Record, append

PUSHED_PROPERTY, PUSHED_VERSION_PROPERTY = "pushed", "pushed_version"


@component
def ModelVerdict(
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: InputArtifact[standard_artifacts.ModelBlessing],
    pushed_model: InputArtifact[standard_artifacts.PushedModel],
    ledger: Parameter[str],
) -> None:
    """Append the `model` record of the run's span: blessed, against what, pushed as which version."""
    blessed = blessing.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1
    against_served = bool(
        blessing.get_string_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY)
    )
    pushed = pushed_model.get_int_custom_property(PUSHED_PROPERTY) == 1
    version = pushed_model.get_string_custom_property(PUSHED_VERSION_PROPERTY) if pushed else ""
    record = Record(
        span_of(examples),
        MODEL,
        blessed=blessed,
        against_served=against_served,
        pushed_version=int(version) if version else None,
    )
    append(ledger, [record])
