"""codec.fields: typed header fields, and fields added later with a default."""

from dataclasses import dataclass

import pytest

from nmc.codec.container import Header
from nmc.codec.errors import ContainerError
from nmc.codec.fields import BOOL, HeaderFields, Int, header_field


@dataclass(frozen=True)
class Fields(HeaderFields):
    size: int = header_field(Int(1, 10))
    flag: bool = header_field(BOOL, default=False)  # added later


def _header(extra: dict) -> Header:
    media = {"kind": "image", "width": 4, "height": 4, "channels": 3, "bit_depth": 8}
    return Header(codec="x", model_id="x", weights="0" * 16, media=media, setting="s", coder={}, packets=1, extra=extra)


def test_an_added_field_is_optional_on_read_and_written_only_when_set() -> None:
    old = Fields.read(_header({"size": 3}))  # a file written before the field existed
    assert old == Fields(size=3, flag=False) and old.section("extra") == {"size": 3}
    new = Fields.read(_header({"size": 3, "flag": True}))
    assert new.flag is True and new.section("extra") == {"size": 3, "flag": True}


def test_fields_are_checked() -> None:
    with pytest.raises(ContainerError, match="lacks extra.size"):
        Fields.read(_header({}))
    with pytest.raises(ContainerError, match="flag"):
        Fields.read(_header({"size": 3, "flag": 7}))
