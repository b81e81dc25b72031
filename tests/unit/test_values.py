"""Postgres text → canonical JSON values (docs/CONTRACTS.md)."""

from __future__ import annotations

import pytest

from streamsync.values import canonical, converter, parse_array

CASES = [
    (16, "t", True),
    (16, "f", False),
    (21, "-7", -7),
    (23, "42", 42),
    (20, "9223372036854775807", 9223372036854775807),
    (26, "12345", 12345),
    (700, "1.5", 1.5),
    (701, "-0.000123", -0.000123),
    (701, "NaN", "NaN"),
    (701, "Infinity", "Infinity"),
    (701, "-Infinity", "-Infinity"),
    (1700, "1234.50", "1234.50"),
    (1700, "NaN", "NaN"),
    (1700, "12345678901234567890.000000000001", "12345678901234567890.000000000001"),
    (25, "hello", "hello"),
    (1043, "", ""),
    (1042, "ab  ", "ab  "),
    (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    (17, "\\xdeadbeef", "\\xdeadbeef"),
    (1082, "2024-05-06", "2024-05-06"),
    (1082, "infinity", "infinity"),
    (1114, "2024-05-06 07:08:09", "2024-05-06T07:08:09"),
    (1114, "2024-05-06 07:08:09.5", "2024-05-06T07:08:09.500000"),
    (1184, "2024-05-06 07:08:09.12+00", "2024-05-06T07:08:09.120000+00:00"),
    (1184, "2024-05-06 07:08:09.123456+00", "2024-05-06T07:08:09.123456+00:00"),
    (1184, "2024-05-06 07:08:09+00", "2024-05-06T07:08:09+00:00"),
    (1184, "2024-05-06 07:08:09.123+02", "2024-05-06T05:08:09.123000+00:00"),
    (1184, "2024-05-06 01:00:00-05:30", "2024-05-06T06:30:00+00:00"),
    (1184, "infinity", "infinity"),
    (114, '{"a": [1, 2.5, null]}', {"a": [1, 2.5, None]}),
    (3802, '"text"', "text"),
    (3802, "3", 3),
    (1083, "07:08:09", "07:08:09"),
    (1186, "1 day 02:00:00", "1 day 02:00:00"),
    (999_999, "an enum label", "an enum label"),
    (1007, "{1,2,NULL}", [1, 2, None]),
    (1009, '{x,"y z",NULL,"NULL","a\\"b","c\\\\d"}', ["x", "y z", None, "NULL", 'a"b', "c\\d"]),
    (1009, "{}", []),
    (1231, "{1.10,NaN}", ["1.10", "NaN"]),
    (1000, "{t,f}", [True, False]),
    (3807, '{"{\\"a\\": 1}","[2]"}', [{"a": 1}, [2]]),
    (1185, '{"2024-05-06 07:08:09+00"}', ["2024-05-06T07:08:09+00:00"]),
    (1182, "{2024-05-06,NULL}", ["2024-05-06", None]),
    (1007, "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
    (1007, "[0:1]={5,6}", [5, 6]),
]


@pytest.mark.parametrize(("oid", "text", "expected"), CASES)
def test_canonical(oid: int, text: str, expected: object) -> None:
    assert canonical(oid, text) == expected
    assert converter(oid)(text) == expected


@pytest.mark.parametrize("oid", [16, 23, 1700, 1184, 3802, 1009])
def test_null_is_none_for_every_type(oid: int) -> None:
    assert canonical(oid, None) is None


def test_parse_array_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_array("not an array")
    with pytest.raises((ValueError, IndexError)):
        parse_array("{1,2")
