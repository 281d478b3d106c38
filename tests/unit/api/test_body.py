"""Request bodies: only JSON objects of sane depth with numbers a float or an int64 holds get through."""

from __future__ import annotations

from typing import Any

import pytest

from voicebot.api.body import MAX_DEPTH, nesting_depth, parse_json_object
from voicebot.api.errors import ApiError


def nested(levels: int) -> bytes:
    """An object whose field holds arrays nested so the whole body is `levels` deep."""
    return b'{"x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('{"a": [1, {"b": 2}]}', 3),
        ('{"a": "[[[{{{"}', 1),
        ('{"a": "\\"[[["}', 1),
        ('{"a": "\\\\", "b": [[]]}', 3),
        ("[" * 100_000, 100_000),
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


def test_a_body_exactly_max_depth_deep_is_accepted() -> None:
    assert parse_json_object(nested(MAX_DEPTH)) == {"x": nested_list(MAX_DEPTH - 1)}


def nested_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        pytest.param(nested(MAX_DEPTH + 1), "33 levels deep", id="33-levels"),
        pytest.param(b"[" * 200_000, "200000 levels deep", id="200000-open-brackets"),
        pytest.param(b'{"n": ' + b"7" * 10_000 + b"}", "64 bits", id="10000-digit-int"),
        pytest.param(b'{"n": -' + b"7" * 10_000 + b"}", "64 bits", id="10000-digit-negative-int"),
        pytest.param(b'{"n": 9223372036854775808}', "64-bit range", id="int64-max-plus-one"),
        pytest.param(b'{"n": -9223372036854775809}', "64-bit range", id="int64-min-minus-one"),
        pytest.param(b'{"n": 1e400}', "64-bit float", id="1e400"),
        pytest.param(b'{"n": -1e400}', "64-bit float", id="minus-1e400"),
        pytest.param(b'{"n": ' + b"9" * 10_000 + b".0}", "64-bit float", id="10000-digit-float"),
        pytest.param(b'{"n": NaN}', "NaN", id="nan"),
        pytest.param(b'{"n": Infinity}', "Infinity", id="infinity"),
        pytest.param(b'{"n": -Infinity}', "-Infinity", id="minus-infinity"),
        pytest.param(b'\xef\xbb\xbf{"n": 1}', "not valid JSON", id="utf8-bom"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
        pytest.param(b"  \n", "empty", id="blank"),
        pytest.param(b"[1]", "must be a JSON object", id="array"),
    ],
)
def test_bodies_out_of_bounds_are_refused_as_invalid_json(raw: bytes, says: str) -> None:
    """Regression: a deeply nested body or a 10,000-digit number got a 500 with a stack trace."""
    with pytest.raises(ApiError) as refused:
        parse_json_object(raw)

    assert (refused.value.status, refused.value.code) == (400, "invalid_json")
    assert says in refused.value.message
    assert len(refused.value.message) < 200


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"n": 9223372036854775807}', 2**63 - 1),
        (b'{"n": -9223372036854775808}', -(2**63)),
        (b'{"n": 1.7976931348623157e308}', 1.7976931348623157e308),
        (b'{"n": 0.' + b"1" * 10_000 + b"}", 0.1111111111111111),
        (b'{"n": 1e-400}', 0.0),
    ],
)
def test_numbers_a_float_or_int64_holds_are_kept(raw: bytes, value: float) -> None:
    assert parse_json_object(raw) == {"n": value}
