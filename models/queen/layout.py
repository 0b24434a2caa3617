"""The 3DGS attribute layout: `.ply` vertex properties <-> one `(N, C)` float32 matrix per frame.

A frame from `codec.media.read_gaussians` maps property names to arrays. The coding core works
on matrices whose columns are, in this order: position (x, y, z), colour DC (f_dc_0..2), the
higher SH coefficients (f_rest_*, 3 * ((d + 1)**2 - 1) of them for SH degree d), opacity
(logit), scale (log, 3) and rotation (quaternion w, x, y, z, not normalised): the raw
parameters a 3DGS `.ply` stores. Normals (nx, ny, nz), which 3DGS writes as zeros, are
accepted when they are zero and written back as zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nmc.codec.errors import MediaError

GROUPS = ("pos", "dc", "rest", "opacity", "scale", "rot")
NORMALS = ("nx", "ny", "nz")
REST_COUNTS = {0: 0, 1: 9, 2: 24, 3: 45}  # f_rest_* per SH degree (3 colours x ((d+1)^2 - 1))

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Layout:
    """Column layout of one sequence: its SH degree and whether its `.ply` files carry normals."""

    sh_degree: int
    normals: bool = True

    @property
    def names(self) -> list[str]:
        """Property names in matrix-column order."""
        rest = REST_COUNTS[self.sh_degree]
        return (["x", "y", "z"] + [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(rest)]
                + ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])

    @property
    def channels(self) -> int:
        return 14 + REST_COUNTS[self.sh_degree]

    def slices(self) -> dict[str, slice]:
        """Columns of each attribute group."""
        rest = REST_COUNTS[self.sh_degree]
        widths = {"pos": 3, "dc": 3, "rest": rest, "opacity": 1, "scale": 3, "rot": 4}
        out, start = {}, 0
        for g in GROUPS:
            out[g] = slice(start, start + widths[g])
            start += widths[g]
        return out

    @classmethod
    def of(cls, frame: dict[str, np.ndarray], where: str = "frame") -> Layout:
        """The layout of a frame's properties; a MediaError names what does not fit 3DGS."""
        keys = set(frame)
        rest = sum(1 for k in keys if k.startswith("f_rest_"))
        degree = {v: k for k, v in REST_COUNTS.items()}.get(rest)
        if degree is None:
            raise MediaError(f"{where}: {rest} f_rest_* properties is no SH degree (0, 9, 24 or 45 expected)")
        normals = all(n in keys for n in NORMALS)
        layout = cls(degree, normals)
        expected = set(layout.names) | (set(NORMALS) if normals else set())
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        if missing or extra:
            raise MediaError(f"{where}: not a 3DGS frame (missing {missing}, unexpected {extra})")
        return layout

    def to_matrix(self, frame: dict[str, np.ndarray], where: str = "frame") -> Matrix:
        """`(N, C)` float32 of a frame with this layout; refuses other layouts, NaN and infinity."""
        if Layout.of(frame, where) != self:
            raise MediaError(f"{where}: attributes differ from the first frame ({Layout.of(frame, where)} vs {self})")
        if self.normals and any(np.any(frame[n] != 0) for n in NORMALS):
            raise MediaError(f"{where}: normals (nx, ny, nz) are not zero; 3DGS frames carry none")
        m = np.stack([np.asarray(frame[n], np.float32) for n in self.names], axis=1)
        if not np.isfinite(m).all():
            bad = sorted({self.names[c] for c in np.nonzero(~np.isfinite(m).all(axis=0))[0]})
            raise MediaError(f"{where}: NaN or infinite values in {bad}")
        return m

    def to_frame(self, m: Matrix) -> dict[str, npt.NDArray[np.float32]]:
        """Property dict (the standard 3DGS `.ply` order, normals as zeros) of a matrix."""
        cols = {n: np.ascontiguousarray(m[:, i], np.float32) for i, n in enumerate(self.names)}
        if not self.normals:
            return cols
        zeros = np.zeros(m.shape[0], np.float32)
        return {"x": cols["x"], "y": cols["y"], "z": cols["z"], **{n: zeros for n in NORMALS},
                **{n: cols[n] for n in self.names[3:]}}
