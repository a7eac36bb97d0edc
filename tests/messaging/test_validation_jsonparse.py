"""The message parser gives exactly what json.loads gives, orjson or not."""

from __future__ import annotations

import json
import random
import struct

import pytest

from messaging.validation import jsonparse
from messaging.validation.stages import parse_payload


def same(data: bytes) -> None:
    expected = json.loads(data)
    got = jsonparse.loads(data)
    assert repr(got) == repr(expected)
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    "literal",
    [
        b"18446744073709551615",  # the largest integer orjson keeps exact
        b"18446744073709551616",  # one more: orjson would make it a float
        b"-9223372036854775809",
        b"123456789012345678901234567890",
        b'{"v": [1, -99999999999999999999, 2.5]}',
    ],
)
def test_integers_beyond_64_bits_stay_exact(literal):
    same(literal)


@pytest.mark.parametrize(
    "document",
    [b"NaN", b"[Infinity, -Infinity]", b"\xef\xbb\xbf{}", b'"\\ud800"', b"1e400", b'{"a":1,"a":2}'],
)
def test_what_orjson_refuses_or_reads_differently_parses_as_json_does(document):
    same(document)


def test_text_and_utf16_parse_as_json_does():
    same('{"a": "\u00e9"}'.encode("utf-16"))
    assert jsonparse.loads('{"a": "\u00e9"}') == {"a": "\u00e9"}
    assert jsonparse.loads(memoryview(b"[1]")) == [1]


def test_numbers_parse_to_the_same_values():
    rng = random.Random(5)
    literals = []
    for _ in range(3000):
        number = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if number == number and abs(number) != float("inf"):
            literals.append(repr(number))
        literals.append(f"{rng.randint(-(10**9), 10**9)}.{rng.randint(0, 10**20)}")
        literals.append(str(rng.randint(-(10**25), 10**25)))
    same(("[" + ",".join(literals) + "]").encode())


@pytest.mark.parametrize("document", [b"{", b'{"a": }', b"\xff", b"[" * 5000 + b"]" * 5000])
def test_bad_json_fails_with_jsons_own_error(document):
    def outcome(parse):
        try:
            return ("parsed", repr(parse(document)))
        except (ValueError, RecursionError) as err:
            return (type(err).__name__, str(err))

    expected = outcome(json.loads)
    assert expected[0] != "parsed" or len(document) > 100  # only the deep one may parse
    assert outcome(jsonparse.loads) == expected


def test_the_syntactic_stage_still_names_what_is_not_json():
    payload, finding = parse_payload(b'{"payload": {"CommonBlock": ')
    assert payload is None
    assert finding is not None
    assert finding.code == "SYN-JSON"
    assert finding.text.startswith("not JSON: Expecting value")
