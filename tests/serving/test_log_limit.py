"""Rate-limited log lines: the first goes out, then one per interval that counts what it left out."""

import logging

from serving.log_limit import LogLimit


def test_one_line_per_key_and_interval_then_the_count_of_lines_left_out(caplog):
    now = [0.0]
    limit = LogLimit(logging.getLogger("test_log_limit"), seconds=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test_log_limit"):
        sent = [limit.log(logging.WARNING, "a", "path %s is gone", "/x") for _ in range(5)]
        assert limit.log(logging.WARNING, "b", "another kind")  # each key has its own interval
        now[0] = 61.0
        assert limit.log(logging.WARNING, "a", "path %s is gone", "/x")
        limit.forget("a")
        assert limit.log(logging.WARNING, "a", "path %s is gone", "/x")  # over, then back: at once
    assert sent == [True, False, False, False, False]
    assert [r.getMessage() for r in caplog.records] == [
        "path /x is gone",
        "another kind",
        "path /x is gone (4 more like this in the last 60 s not logged)",
        "path /x is gone",
    ]
