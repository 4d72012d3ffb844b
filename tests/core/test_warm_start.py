"""The Trainer's record of its warm start, read by the run report and `fmnist lineage`."""

from core.warm_start import WarmStart, read_warm_start, write_warm_start


def test_the_record_reads_back_and_is_absent_when_no_model_was_offered(tmp_path):
    refused = WarmStart("/served/7", restored=False, why_not="the served model's architecture differs")
    write_warm_start(str(tmp_path / "model_run"), refused)
    assert read_warm_start(str(tmp_path / "model_run")) == refused
    assert read_warm_start(str(tmp_path / "other_run")) is None
