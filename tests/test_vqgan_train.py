"""vqgan train.py on the CPU: exact resume through the GAN start, dead-code restarts and a mid-window
checkpoint; a ladder rung fine-tunes only what it should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nmc.models.trainkit.checkpoint import load as load_checkpoint
from nmc.models.vqgan import ladder, train
from nmc.codec.weights import read_weights
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "photo_aqua.png"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    px = np.asarray(Image.open(SAMPLE).convert("RGB"))
    for i in range(4):
        Image.fromarray(px[100 * i : 100 * i + 96, 150 * i : 150 * i + 128]).save(root / f"p{i}.png")
    return root


def run(data: Path, ckpt: Path, steps: int, **kw: object) -> None:
    """A tiny run: the GAN from step 2, a usage window (and restarts) every 2 steps."""
    args: dict = dict(data=data, ckpt_dir=ckpt, max_steps=steps, tiny=True, holdout=0, warmup=2, lr=2e-3, disc_start=2,
                      adv_ramp=2, usage_window=2, log_every=1)  # fmt: skip
    train.main(**{**args, **kw})


def test_resume_is_exact(photos: Path, tmp_path: Path) -> None:
    """3 steps + 3 resumed steps end where 6 steps do (weights, discriminator, usage counts)."""
    for ckpt, steps in (("zero", 0), ("a", 6), ("b", 3), ("b", 6)):
        run(photos, tmp_path / ckpt, steps, usage_window=4 if ckpt != "zero" else 2)  # the save at 3 is mid-window
    assert load_checkpoint(tmp_path / "zero") is None  # nothing trained, nothing written
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a is not None and b is not None and a[1]["step"] == b[1]["step"] == 6
    assert a[0].keys() == b[0].keys() and any(k.startswith("opt_d/") for k in a[0])  # the discriminator trained
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    log = (tmp_path / "a" / "train.log").read_text()
    assert "codes used" in log and " d " in log.split("step 3 ")[1] and " d " not in log.split("step 2 ")[1].split("\n")[0]


def test_dead_codes_restart(photos: Path, tmp_path: Path) -> None:
    run(photos, tmp_path / "r", 2, restart=True)
    run(photos, tmp_path / "n", 2, restart=False)
    r, n = load_checkpoint(tmp_path / "r"), load_checkpoint(tmp_path / "n")
    assert r is not None and n is not None
    moved = (r[0]["g/vq.codebook"] - n[0]["g/vq.codebook"]).norm(dim=1) > 1e-3
    assert 0 < int(moved.sum()) < len(moved)  # some codes were unused in the window and restarted, not all
    assert float(r[0]["usage"].sum()) == 0  # the window ended: counts start again


@pytest.mark.parametrize("tune_decoder", [False, True])
def test_rung_fine_tunes_codebook_and_1x1_convs(photos: Path, tmp_path: Path, tune_decoder: bool) -> None:
    run(photos, tmp_path / "base", 2, export=tmp_path / "base.safetensors")
    ladder.main(network=tmp_path / "base.safetensors", out=tmp_path / "ladder.safetensors", rungs="8,16", data=None, seed=0)
    run(photos, tmp_path / "r8", 2, init=tmp_path / "base", ladder=tmp_path / "ladder.safetensors", rung=8,
        tune_decoder=tune_decoder, export=tmp_path / "r8.safetensors")  # fmt: skip
    base, r8 = load_checkpoint(tmp_path / "base"), load_checkpoint(tmp_path / "r8")
    assert base is not None and r8 is not None and r8[1]["trainable"] == ("rung+decoder" if tune_decoder else "rung")
    assert r8[0]["g/vq.codebook"].shape == (8, train.TINY.code_dim) and read_weights(tmp_path / "r8.safetensors").args["codebook_size"] == 8
    for k, v in base[0].items():
        if k.startswith("g/") and k != "g/vq.codebook":
            changes = k.startswith("g/vq.") or (tune_decoder and k.startswith("g/g_s."))
            assert torch.equal(v, r8[0][k]) != changes, k
    with pytest.raises(Exception, match="no rung 32"):
        run(photos, tmp_path / "r32", 1, init=tmp_path / "base", ladder=tmp_path / "ladder.safetensors", rung=32)
