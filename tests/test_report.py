"""report.html from `nmc eval`: decoded media per point, the page, --html-only, and the page in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from browser import Chromium, check_page, find_chromium
from conftest import synthetic_image
from nmc.codec import anchors as A
from nmc.codec import evaluate
from nmc.codec import media as M
from nmc.codec import report_media as RM
from nmc.codec.errors import MediaError
from test_evaluate import cli

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "build" / "screenshots"  # kept after the run for a person to look at
METRICS = {"image": ["psnr"], "audio": ["si_sdr", "mel_distance"]}


def small_dataset(root: Path) -> Path:
    """Two photos (one with an '&' in its name, escaped on the page) and a stereo 44.1 kHz clip."""
    root.mkdir(parents=True)
    M.write_image(root / "a&b.png", synthetic_image(176, 168, seed=1))
    M.write_image(root / "c.png", synthetic_image(168, 192, seed=2))
    t = np.arange(44100) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t)
    sf.write(root / "tone.flac", np.stack([tone, 0.5 * tone], axis=1).astype(np.float32), 44100)
    return root


def run_eval(data: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    return evaluate.run([data], ["toy-image", "toy-audio"], ["jpeg", "opus"], out, METRICS, **kwargs)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished report over the small dataset (shared: the eval takes a few seconds)."""
    root = tmp_path_factory.mktemp("report")
    run_eval(small_dataset(root / "data"), root / "r")
    return root / "r"


def page_links(page: Path) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', page.read_text())


class TestMedia:
    def test_crop_box_finds_the_detail(self) -> None:
        rgb = np.full((200, 300, 3), 100, np.uint8)
        rgb[150:190, 20:60] = np.random.default_rng(0).integers(0, 255, (40, 40, 3))
        x, y, w, h = RM.crop_box(rgb, side=32)
        assert (w, h) == (32, 32) and 20 <= x <= 28 and 150 <= y <= 158
        assert RM.crop_box(rgb[:20, :50], side=32) == (0, 0, 32, 20)

    def test_select_points_in_log_rate(self) -> None:
        records = [{"setting": s, "bpp": r} for s, r in (("a", 0.05), ("b", 0.11), ("c", 0.3), ("d", 1.0))]
        assert RM.select_points(records, "bpp", None) == {"a", "b", "c", "d"}
        assert RM.select_points(records, "bpp", [0.1]) == {"b"}
        assert RM.select_points(records, "bpp", [0.2, 0.6]) == {"c", "d"}  # log: 0.2 is nearer 0.3 than 0.11

    def test_audio_media(self, tmp_path: Path) -> None:
        t = np.arange(8000) / 8000
        clip = M.Audio.from_array(0.5 * np.sin(2 * np.pi * 300 * t), 8000)
        ref = M.Audio.from_array(np.zeros((44100, 2)), 44100)
        media = RM.FileMedia.open(tmp_path, "x/speech.flac", "ab" * 32, "audio", lambda: ref)
        media.write("p", clip)
        assert media.has("p") and media.has("original")
        info = sf.info(str(media.path("p", "ogg")))
        assert (info.format, info.subtype, info.samplerate) == ("OGG", "OPUS", 8000) and abs(info.duration - 1) < 0.05
        kbps = 8 * media.path("p", "ogg").stat().st_size / 1000
        assert kbps < 2 * RM.OPUS_KBPS
        assert sf.info(str(media.path("original", "ogg"))).samplerate == 48000  # 44.1 kHz is not an Opus rate
        lossless, rate = sf.read(str(media.full_path("p")))
        assert rate == 8000 and np.abs(lossless - clip.to_array()[:, 0]).max() < 1e-4
        from PIL import Image

        with Image.open(media.path("p", "spec.webp")) as im:
            assert im.size == RM.SPECTROGRAM

    def test_image_media_are_lossless(self, tmp_path: Path) -> None:
        ref = synthetic_image(150, 200, seed=3)
        media = RM.FileMedia.open(tmp_path, "photo.png", "cd" * 32, "image", lambda: ref)
        decoded = synthetic_image(150, 200, seed=4)
        media.write("p", decoded)
        x, y, w, h = media.info["crop"]
        assert M.read_image(media.path("p", "crop.webp")).pixels.tolist() == decoded.pixels[y : y + h, x : x + w].tolist()
        assert np.array_equal(M.read_image(media.full_path("p")).pixels, decoded.pixels)
        assert json.loads((tmp_path / "media" / media.folder / "info.json").read_text())["crop"] == [x, y, w, h]


class TestEvalPage:
    def test_every_point_has_media_and_every_link_exists(self, report_dir: Path) -> None:
        report = json.loads((report_dir / "report.json").read_text())
        page = (report_dir / "report.html").read_text()
        for r in report["records"]:
            coder = report["meta"]["coders"][r["codec"]]
            name = RM.point_name(r["codec"], r["setting"], coder["identity"])
            folder = RM.folder_of(r["file"], report["meta"]["sources"][r["file"]])
            suffix = RM.PAGE_FILES[coder["media"]][0]
            assert f"media/{folder}/{name}.{suffix}" in page
        links = page_links(report_dir / "report.html")
        assert links and all((report_dir / link).is_file() for link in links if not link.startswith("data:"))
        assert "http://" not in page and "https://" not in page
        assert "a&amp;b.png" in page and "a&b.png<" not in page
        assert all((report_dir / f"rd_{m}.svg").exists() for m in ("psnr", "si_sdr", "mel_distance"))

    def test_media_are_written_once_and_reused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        data = small_dataset(tmp_path / "data")
        run_eval(data, tmp_path / "r")
        calls: list[str] = []
        encode = A.JPEG.encode

        def counting(self: A.JPEG, media: Any, setting: str) -> bytes:
            calls.append(setting)
            return encode(self, media, setting)

        monkeypatch.setattr(A.JPEG, "encode", counting)
        run_eval(data, tmp_path / "r")
        assert calls == []  # every point and its media come from the report directory
        crop = next((tmp_path / "r" / "media").glob("c-*/jpeg.q50.*.crop.webp"))
        spectrogram = next((tmp_path / "r" / "media").glob("tone-*/original.spec.webp"))
        crop.unlink()
        spectrogram.unlink()
        run_eval(data, tmp_path / "r")
        assert calls == ["q50"] and crop.exists() and spectrogram.exists()  # only the missing media are made again

    def test_media_at_keeps_the_closest_settings(self, tmp_path: Path) -> None:
        report = run_eval(small_dataset(tmp_path / "data"), tmp_path / "r", media_at=[0.5])
        folder = RM.folder_of(report["records"][0]["file"], report["meta"]["sources"][report["records"][0]["file"]])
        crops = sorted(p.name.split(".")[1] for p in (tmp_path / "r" / "media" / folder).glob("jpeg.*.crop.webp"))
        jpeg = {r["setting"]: r["bpp"] for r in report["records"] if r["codec"] == "jpeg" and r["file"].endswith("a&b.png")}
        assert crops == [min(jpeg, key=lambda s: abs(np.log(jpeg[s] / 0.5)))]
        assert "not kept" in (tmp_path / "r" / "report.html").read_text()

    def test_changed_coder_output_is_an_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        data = small_dataset(tmp_path / "data")
        run_eval(data, tmp_path / "r")
        next((tmp_path / "r" / "media").glob("c-*/jpeg.q50.*.crop.webp")).unlink()
        monkeypatch.setattr(A.JPEG, "encode", lambda self, media, setting: b"\xff" * 3)
        with pytest.raises(MediaError, match="coding again gave 3 bytes"):
            run_eval(data, tmp_path / "r")

    def test_html_only_rebuilds_without_coding(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        run_eval(small_dataset(tmp_path / "data"), tmp_path / "r")
        shutil.rmtree(tmp_path / "r" / "full")  # as in the committed dev reports
        (tmp_path / "r" / "report.html").unlink()

        def boom(*args: object) -> bytes:
            raise AssertionError("--html-only must not code anything")

        monkeypatch.setattr(A.JPEG, "encode", boom)
        assert cli("eval", "--html-only", str(tmp_path / "r")) == 0
        assert "report.html" in capsys.readouterr().err
        page = (tmp_path / "r" / "report.html").read_text()
        assert "media/" in page and "full/" not in page  # no link to what is gone
        assert all((tmp_path / "r" / link).is_file() for link in page_links(tmp_path / "r" / "report.html") if not link.startswith("data:"))

    def test_user_errors(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli("eval", "--html-only", str(tmp_path)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no report.json" in err and "Traceback" not in err
        (tmp_path / "report.json").write_text("{")
        assert cli("eval", "--html-only", str(tmp_path)) == 1
        assert "not valid JSON" in capsys.readouterr().err
        assert cli("eval", "--html-only", str(tmp_path), str(tmp_path), "-a", "jpeg") == 2
        assert "takes no DATASET" in capsys.readouterr().err
        assert cli("eval", "-a", "jpeg") == 2
        assert "give one or more" in capsys.readouterr().err
        assert cli("eval", str(tmp_path), "-a", "jpeg", "--media-at", "0.1,x") == 2
        assert "positive rates" in capsys.readouterr().err


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not found: .ci/run installs Debian's chromium package")
        pytest.skip("chromium not found (apt-get install chromium): the page is not checked in a browser")
    return exe


class TestInBrowser:
    def test_everything_loads(self, report_dir: Path, chromium: str) -> None:
        shot = SCREENSHOTS / "report-small.png"
        check = check_page(report_dir / "report.html", shot, chromium, scroll_to="#image")
        assert check.problems == []
        points = json.loads((report_dir / "report.json").read_text())["records"]
        images = sum(1 for r in points if r["codec"] in ("toy-image", "jpeg"))
        audio = sum(1 for r in points if r["codec"] in ("toy-audio", "opus"))
        assert check.audio == audio + 1  # every point and the original
        per_photo = 1 + 2 + 2  # thumbnail, slider A and B, line-up of the two codecs
        assert check.images == 3 + images + 2 * per_photo + audio + 1  # plots, crops, spectrograms
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_broken_media_are_found(self, report_dir: Path, chromium: str, tmp_path: Path) -> None:
        copy = tmp_path / "r"
        shutil.copytree(report_dir, copy)
        crop = next((copy / "media").glob("c-*/jpeg.q50.*.crop.webp"))
        clip = next((copy / "media").glob("tone-*/opus.6k.*.ogg"))
        full = next((copy / "full").glob("a_b-*/jpeg.q10.*.png"))
        crop.unlink()
        clip.write_bytes(b"not an ogg file")
        full.unlink()
        (copy / "rd_psnr.svg").unlink()
        problems = "\n".join(check_page(copy / "report.html", None, chromium).problems)
        assert f"image did not load: media/{crop.parent.name}/{crop.name}" in problems
        assert f"audio did not load (error): media/{clip.parent.name}/{clip.name}" in problems
        assert f"broken link: full/{full.parent.name}/{full.name}" in problems
        assert "image did not load: rd_psnr.svg" in problems and "ERR_FILE_NOT_FOUND" in problems

    def test_script_errors_and_network_are_found(self, chromium: str, tmp_path: Path) -> None:
        page = tmp_path / "p.html"
        page.write_text(
            '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
            '<img src="http://127.0.0.1:9/x.png"><a href="missing.png">x</a>'
            '<script>console.error("boom"); undefinedFunction();</script></body></html>'
        )
        problems = "\n".join(check_page(page, None, chromium).problems)
        assert "console error: boom" in problems and "undefinedFunction is not defined" in problems
        assert "not local (the page must work offline): http://127.0.0.1:9/x.png" in problems
        assert "network request: http://127.0.0.1:9/x.png" in problems and "broken link: missing.png" in problems

    def test_slider_compares_any_two(self, report_dir: Path, chromium: str) -> None:
        with Chromium(chromium) as browser:
            browser.call("Page.enable", session=True)
            browser.call("Page.navigate", session=True, url=(report_dir / "report.html").as_uri())
            browser.wait_for("Page.loadEventFired")

            def js(expression: str) -> Any:
                return browser.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)["result"].get("value")

            file = "document.querySelector('details.file.image')"
            lineup = js(f"[...{file}.querySelectorAll('.lineup figure b')].map((b) => b.textContent)")
            assert [s.split()[0] for s in lineup] == ["toy-image", "jpeg"]  # each codec at the chosen rate
            assert js(f"{file}.querySelector('.img-a').src.includes('toy-image.')") is True
            js(f"{file}.querySelector('.all button[data-pick=b][data-entry=\"5\"]').click()")
            assert js(f"{file}.querySelector('.img-b').src.endsWith({file}.querySelectorAll('.all figure.crop img')[4].src)") is True
            assert js(f"{file}.querySelector('.pick-b').value") == "5"
            js(f"const s = {file}.querySelector('.split'); s.value = 20; s.dispatchEvent(new Event('input'))")
            assert js(f"{file}.querySelector('.img-a').style.clipPath") == "inset(0px 80% 0px 0px)"
            js(f"const z = {file}.querySelector('.zoom'); z.value = 2; z.dispatchEvent(new Event('change'))")
            assert js(f"{file}.querySelector('.img-a').style.width") == f"{2 * RM.CROP}px"

    @pytest.mark.parametrize("name", ["dev-images", "dev-speech"])
    def test_committed_dev_pages(self, name: str, chromium: str) -> None:
        page = ROOT / "docs" / "benchmarks" / name / "report.html"
        check = check_page(page, SCREENSHOTS / f"{name}.png", chromium)
        assert check.problems == [] and check.images > 0
        text = page.read_text()
        assert text.count("<audio") == text.count('class="spec"')  # every clip, the original too, has its spectrogram
        assert text.count('class="file image"') == text.count('class="entries"')  # every photo has media
