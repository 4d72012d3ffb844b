"""Two TF Serving config protos the `tensorflow-serving-api` wheel does not ship, built from their `.proto`.

`MonitoringConfig` (tensorflow_serving/config/monitoring_config.proto, read
with `--monitoring_config_file`) and `BatchingParameters`
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto, read
with `--batching_parameters_file`). The messages are declared here with TF
Serving's own package, names, field numbers and types, so files written for
the real server parse with protobuf's `text_format` exactly as there.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from core.errors import InputError

_PACKAGE = "tensorflow.serving"
_Field = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> _Field:
    label = _Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL
    field = _Field(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _file() -> descriptor_pb2.FileDescriptorProto:
    message, int64, string, boolean = (
        _Field.TYPE_MESSAGE,
        ".google.protobuf.Int64Value",
        _Field.TYPE_STRING,
        _Field.TYPE_BOOL,
    )
    proto = descriptor_pb2.FileDescriptorProto(
        name="fmnist/tensorflow_serving_configs.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    proto.message_type.add(
        name="PrometheusConfig", field=[_field("enable", 1, boolean), _field("path", 2, string)]
    )
    proto.message_type.add(
        name="MonitoringConfig",
        field=[_field("prometheus_config", 1, message, f".{_PACKAGE}.PrometheusConfig")],
    )
    proto.message_type.add(
        name="BatchingParameters",
        field=[
            _field("max_batch_size", 1, message, int64),
            _field("batch_timeout_micros", 2, message, int64),
            _field("max_enqueued_batches", 3, message, int64),
            _field("num_batch_threads", 4, message, int64),
            _field("thread_pool_name", 5, message, ".google.protobuf.StringValue"),
            _field("allowed_batch_sizes", 6, _Field.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, boolean),
            _field("enable_large_batch_splitting", 8, message, ".google.protobuf.BoolValue"),
            _field("max_execution_batch_size", 9, message, int64),
        ],
    )
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
    wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())  # fmt: skip
_POOL.Add(_file())
MonitoringConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{_PACKAGE}.MonitoringConfig")
)
BatchingParameters = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{_PACKAGE}.BatchingParameters")
)


def read_text_proto(path: str, message_class, flag: str):
    """A text-format proto from `path`; InputError naming the flag and file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return text_format.Parse(f.read(), message_class())
    except OSError as err:
        raise InputError(f"{flag} {path}: cannot be read: {err.strerror or err}") from None
    except text_format.ParseError as err:
        raise InputError(
            f"{flag} {path}: not a {message_class.DESCRIPTOR.name} in text format: {err}"
        ) from None
