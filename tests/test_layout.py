"""Attribute decoding and file-name parsing, every encoding variant."""

import numpy as np
import pytest

from aa4xr.layout import decode_attr, parse_unit_name


@pytest.mark.parametrize("raw,expected", [
    ("Call1", "Call1"), (b"Call1", "Call1"), (np.bytes_(b"Call1"), "Call1"),
    (np.array([b"Call1"]), "Call1"), (np.array([[b"Call1"]]), "Call1"),
    ("None", None), (b"None", None), (np.array([b"None"]), None),
    (np.int64(3), 3), (np.float64(3.0), 3.0), (np.array([2.5]), 2.5), (7, 7),
])
def test_decode_attr(raw, expected):
    got = decode_attr(raw)
    assert got == expected and type(got) is type(expected)


def test_parse_unit_name_variants():
    full = parse_unit_name("Site3_L1400R1250_e17_s1_ss2")
    assert full == {"site": "Site3", "ldepth": 1400.0, "rdepth": 1250.0, "electrode": 17,
                    "sort_id": 1, "subsort_id": 2.0}
    left_only = parse_unit_name("Site1_L900_e4_s0")
    assert left_only["ldepth"] == 900.0 and np.isnan(left_only["rdepth"]) and np.isnan(left_only["subsort_id"])
    right_only = parse_unit_name("Site1_R900_e20_s0")
    assert np.isnan(right_only["ldepth"]) and right_only["rdepth"] == 900.0
    with pytest.raises(ValueError, match="Unit7"):
        parse_unit_name("Unit7")
