"""Checkpoint reports, the wait a preemption makes for one, the work it loses, the resume env."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.policy.checkpoint import (
    MAX_PATH_CHARS,
    Checkpoint,
    latest,
    lost_gpu_seconds,
    parse_report,
    progress,
    resume_env,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"step": 1200, "path": "s3://b/run/1200"}', Checkpoint(1200, "s3://b/run/1200", at(60))),
        ('{"step": 5, "path": "/ckpt/5", "time": "2026-12-01T12:00:30Z"}', Checkpoint(5, "/ckpt/5", at(30))),
        # a time in the future is not believed: the report counts from when it was seen
        ('{"step": 5, "path": "/ckpt/5", "time": "2030-01-01T00:00:00Z"}', Checkpoint(5, "/ckpt/5", at(60))),
        ('{"step": 5, "path": "/ckpt/5", "time": "yesterday"}', Checkpoint(5, "/ckpt/5", at(60))),
        ('{"step": 5, "path": "/ckpt/5", "time": "2026-12-01T12:00:30"}', Checkpoint(5, "/ckpt/5", at(60))),
        (None, None),
        ("", None),
        ("not json", None),
        ("[1, 2]", None),
        ('{"step": -1, "path": "/c"}', None),
        ('{"step": true, "path": "/c"}', None),
        ('{"step": 1.5, "path": "/c"}', None),
        ('{"step": 1}', None),
        ('{"step": 1, "path": ""}', None),
        ('{"step": 1, "path": "/c\\nINFO forged log line"}', None),
        ('{"step": 1, "path": "' + "x" * (MAX_PATH_CHARS + 1) + '"}', None),
        ('{"step": 1, "path": "/c", "pad": "' + "x" * 5000 + '"}', None),
    ],
)
def test_a_report_is_read_or_refused_without_raising(text: str | None, expected: Checkpoint | None) -> None:
    assert parse_report(text, seen=at(60)) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.text(max_size=300),
        st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20)).map(json.dumps),
    )
)
def test_no_report_makes_the_parser_raise(text: str | None) -> None:
    report = parse_report(text, seen=at(0))
    assert report is None or (report.step >= 0 and report.path and report.time <= at(0))


def test_the_most_advanced_report_wins() -> None:
    a, b = Checkpoint(10, "/a", at(5)), Checkpoint(12, "/b", at(1))
    assert latest([None, a, b]) == b
    assert latest([None]) is None


def test_a_request_is_answered_by_a_report_made_after_it() -> None:
    before = Checkpoint(10, "/ckpt/10", at(-30))
    after = Checkpoint(11, "/ckpt/11", at(20))
    waiting = progress(requested=at(0), reports=[before], now=at(10), grace_seconds=120)
    assert (waiting.state, waiting.checkpoint, waiting.seconds_left) == ("waiting", before, 110)
    done = progress(requested=at(0), reports=[before, after], now=at(20), grace_seconds=120)
    assert (done.state, done.checkpoint) == ("checkpointed", after)


def test_the_grace_period_ends_the_wait_and_the_last_checkpoint_is_kept() -> None:
    before = Checkpoint(10, "/ckpt/10", at(-30))
    out = progress(requested=at(0), reports=[before], now=at(120), grace_seconds=120)
    assert (out.state, out.checkpoint) == ("timedOut", before)
    assert lost_gpu_seconds(gpus=8, stopped=at(120), started=at(-3600), last=out.checkpoint) == 150 * 8


def test_without_any_checkpoint_everything_since_start_is_lost() -> None:
    assert lost_gpu_seconds(gpus=4, stopped=at(100), started=at(0), last=None) == 400
    assert lost_gpu_seconds(gpus=4, stopped=at(100), started=None, last=None) == 0


def test_resumed_workers_get_the_checkpoint() -> None:
    assert resume_env(Checkpoint(7, "s3://b/7", at(0))) == {
        "KUBEFORGE_CHECKPOINT_PATH": "s3://b/7",
        "KUBEFORGE_CHECKPOINT_STEP": "7",
    }
    assert resume_env(None) == {}
