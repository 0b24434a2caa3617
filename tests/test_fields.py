"""codec.fields: typed header fields, and fields added later with a default."""

from dataclasses import dataclass

import pytest

from nmc.codec.container import Header
from nmc.codec.errors import ContainerError
from nmc.codec.fields import BOOL, HeaderFields, Int, check_media, header_field


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


@pytest.mark.parametrize("names", [["../up.ply"], ["/etc/x.ply"], ["a.ply", "a.ply"], [".nmc-frames"], ["x.txt"], ["a\\b.ply"], ["a\0.ply"], [3], "a.ply"])
def test_frame_names_cannot_leave_the_output_directory(names: object) -> None:
    media = {"kind": "gaussians", "frame_count": 1 if isinstance(names, str) else len(names), "names": names}
    with pytest.raises(ContainerError, match="media.names"):
        check_media(media)


def test_one_name_per_frame() -> None:
    check_media({"kind": "gaussians", "frame_count": 2, "names": ["a.ply", "b.ply"]})
    with pytest.raises(ContainerError, match="names 2 frames but claims 3"):
        check_media({"kind": "gaussians", "frame_count": 3, "names": ["a.ply", "b.ply"]})
