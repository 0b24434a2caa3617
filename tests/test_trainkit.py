"""The training kit: step schedules, sharded checkpoints, optimizer state, dev refusal, exact resume."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nmc.models.trainkit import checkpoint as ckpt_io
from nmc.models.trainkit.corpus import training_files
from nmc.models.trainkit.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]


class TestSchedule:
    def test_warmup_then_cosine_to_floor(self) -> None:
        s = Schedule(1e-3, warmup=10, total_steps=1000, min_frac=0.1, kind="cosine")
        assert s(0) == pytest.approx(1e-4)
        assert s(9) == pytest.approx(1e-3, rel=1e-3)
        assert s(500) == pytest.approx(1e-3 * 0.55)
        assert s(1000) == s(5000) == pytest.approx(1e-4)

    def test_exp_halves_and_rewarms_from_a_fresh_optimizer(self) -> None:
        s = Schedule(1e-3, warmup=100, kind="exp", half_life=1000, min_frac=0.05)
        assert s(2000) == pytest.approx(0.25e-3)
        assert s(2000, warm_from=2000) == pytest.approx(0.25e-5)
        assert s(10**6) == pytest.approx(0.05e-3)

    def test_wsd_holds_the_peak_then_decays_linearly(self) -> None:
        s = Schedule(1e-3, warmup=10, total_steps=1000, min_frac=0.1, kind="wsd", decay_steps=200)
        assert s(0) == pytest.approx(1e-4) and s(500) == s(800) == pytest.approx(1e-3)
        assert s(900) == pytest.approx(0.55e-3) and s(1000) == s(5000) == pytest.approx(1e-4)
        assert Schedule(1e-3, warmup=10, total_steps=2000, kind="wsd", decay_steps=200)(800) == s(800)  # extended: no jump

    def test_unknown_kind(self) -> None:
        with pytest.raises(ValueError, match="linear"):
            Schedule(1e-3, kind="linear")


class TestCheckpoint:
    def test_shards_split_large_tensors_and_round_trip(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ckpt_io, "SHARD_BYTES", 4000)
        tensors = {"a": torch.randn(30, 50), "b": torch.arange(7), "c": torch.randn(3).to(torch.bfloat16)}
        sizes = ckpt_io.save(tmp_path, tensors, {"step": 5, "x": [1]})
        assert len(sizes) >= 2
        assert all(len(load_file(str(f))) > 0 for f in tmp_path.glob("shard-*"))
        back, meta = ckpt_io.load(tmp_path)
        assert meta["step"] == 5 and meta["x"] == [1]
        assert all(torch.equal(back[k], v) for k, v in tensors.items())
        ckpt_io.save(tmp_path, tensors, {"step": 6})  # the older shards go once the new index is in place
        assert {f.name.split("-")[1] for f in tmp_path.glob("shard-*")} == {"000000006"}

    def test_no_checkpoint_and_bad_format(self, tmp_path: Path) -> None:
        assert ckpt_io.load(tmp_path) is None
        (tmp_path / "ckpt.json").write_text('{"format": "other"}')
        with pytest.raises(ValueError, match="other"):
            ckpt_io.load(tmp_path)

    @pytest.mark.parametrize("moments", ["fp32", "bf16", "none"])
    def test_optimizer_state(self, moments: str) -> None:
        net = torch.nn.Linear(4, 3)
        opt = torch.optim.AdamW(net.parameters(), 1e-2)
        net(torch.randn(8, 4)).sum().backward()
        opt.step()
        tensors, groups = ckpt_io.optimizer_tensors(opt, "opt", moments)
        opt2 = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), 1e-2)
        assert ckpt_io.load_optimizer(opt2, tensors, "opt", groups) == (moments != "none")
        if moments == "fp32":
            for p, q in zip(opt.param_groups[0]["params"], opt2.param_groups[0]["params"]):
                assert torch.equal(opt.state[p]["exp_avg_sq"], opt2.state[q]["exp_avg_sq"])


def test_training_files_refuse_the_dev_set(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "train").mkdir()
    (tmp_path / "dev" / "a.wav").write_bytes(b"")
    (tmp_path / "train" / "b.wav").write_bytes(b"")
    (tmp_path / "train" / "c.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="development"):
        training_files(tmp_path / "dev", (".wav",))
    assert training_files(tmp_path, (".wav",)) == [tmp_path / "train" / "b.wav"]
    with pytest.raises(ValueError, match="no .flac"):
        training_files(tmp_path / "train", (".flac",))


def test_held_out_photos_are_whole_and_sources_can_be_tempered(tmp_path: Path) -> None:
    """Every scale of a held-out photo is held out (`PHOTO@SIDE` in its package's folder), and `source_weights`
    gives each folder n ** (1 - power) of the draws."""
    from PIL import Image

    from nmc.models.trainkit.images import random_crops, source_weights, split_photos

    names = ["big/a", "big/b", "big/c", "big/d", "big/e", "big/f", "wall/x@1536", "wall/x@768", "wall/y@768"]
    for n in names:
        (tmp_path / n).parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 32)).save(tmp_path / f"{n}.png")
    for holdout in range(1, 8):
        train, held = split_photos(tmp_path, holdout)
        assert sorted(train + held) == sorted(tmp_path.rglob("*.png"))
        assert ((tmp_path / "wall/x@1536.png") in held) == ((tmp_path / "wall/x@768.png") in held)
        assert len({p.stem.split("@")[0] for p in held}) == holdout
    files = split_photos(tmp_path, 0)[0]
    w = source_weights(files, 0.5)
    per_folder = {d: sum(float(x) for x, p in zip(w, files) if p.parent.name == d) for d in ("big", "wall")}
    assert per_folder["big"] == pytest.approx(6**0.5) and per_folder["wall"] == pytest.approx(3**0.5)
    assert torch.equal(source_weights(files, 0.0), torch.ones(len(files), dtype=torch.float64))
    images = [torch.full((3, 32, 32), i, dtype=torch.uint8) for i in range(len(files))]
    only_last = torch.zeros(len(files), dtype=torch.float64)
    only_last[-1] = 1
    x = random_crops(images, 4, 16, (1.0, 1.0), torch.Generator().manual_seed(0), only_last)
    assert torch.allclose(x, torch.full_like(x, (len(files) - 1) / 255))


def _train(ckpt: Path, steps: int, data: Path) -> None:
    cmd = [sys.executable, str(ROOT / "models/hificodec/train.py"), "--tiny", "--data", str(data), "--ckpt-dir", str(ckpt),
           "--max-steps", str(steps), "--ckpt-optim", "fp32", "--disc-start", "2", "--restart-every", "3",
           "--log-every", "1", "--max-files", "4"]
    subprocess.run(cmd, check=True, capture_output=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_hificodec_resume_is_exact(tmp_path: Path) -> None:
    """Two calls of 3 steps end on the same weights as one call of 6 (GAN and dead-code restarts included)."""
    data = ROOT / "samples"
    _train(tmp_path / "once", 6, data)
    _train(tmp_path / "twice", 3, data)
    _train(tmp_path / "twice", 6, data)
    a, meta_a = ckpt_io.load(tmp_path / "once")
    b, meta_b = ckpt_io.load(tmp_path / "twice")
    assert meta_a["step"] == meta_b["step"] == 6
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_slim_copy_drops_optimizer_moments_and_resumes_fresh(tmp_path: Path) -> None:
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), 1e-2)
    net(torch.randn(8, 4)).sum().backward()
    opt.step()
    t, groups = ckpt_io.optimizer_tensors(opt, "opt_g", "fp32")
    ckpt_io.save(tmp_path / "full", {**{f"g/{k}": v for k, v in net.state_dict().items()}, **t},
                 {"step": 9, "opt_g_groups": groups, "ckpt_optim": "fp32"})
    ckpt_io.slim(tmp_path / "full", tmp_path / "slim")
    tensors, meta = ckpt_io.load(tmp_path / "slim")
    assert set(tensors) == {"g/weight", "g/bias"} and meta["step"] == 9 and meta["ckpt_optim"] == "none"
    assert not ckpt_io.load_optimizer(torch.optim.AdamW(net.parameters()), tensors, "opt_g", meta["opt_g_groups"])
    ckpt_io.slim(tmp_path / "full", tmp_path / "half", half=True)
    half, _ = ckpt_io.load(tmp_path / "half")
    assert half["g/weight"].dtype == torch.float16 and torch.allclose(half["g/weight"].float(), net.weight, rtol=1e-3)
