"""The command line: round trips, --json, atomic outputs, and one clear line for every bad input."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import toycodec
from conftest import with_header

from nmc.cli.main import main
from nmc.codec import api, registry
from nmc.codec import media as M

ROOT = Path(__file__).parent.parent
# `nmc` in a subprocess (run from ROOT) with the toy codecs registered; SLOW_NMC: 1 s per toy packet
NMC = [sys.executable, "-c", "import sys; sys.path.insert(0, 'tests'); import toycodec; from nmc.cli.main import main; main(sys.argv[1:])"]
SLOW_NMC = [NMC[0], "-c", NMC[2].replace("import toycodec;", "import toycodec; toycodec.slow(1.0);")]


def default_sigint() -> None:
    """`preexec_fn` of a child that must take Ctrl-C: a shell starts background jobs (`make test &`) with SIGINT
    ignored, and a Python started so keeps ignoring it, as a user's `nmc` would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(result: tuple[int, str, str], fragment: str) -> None:
    code, _, err = result
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nmc: error:") and fragment in lines[0], err
    assert "Traceback" not in err


def files_in(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


class TestRoundTrip:
    def test_image(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        code, out, _ = run(capsys, "compress", str(image_file), "--codec", "toy-image", "--json")
        assert code == 0
        summary = json.loads(out)
        assert summary["output"].endswith("photo.png.nmc") and summary["unit"] == "bpp" and summary["rate"] > 0
        target = image_file.with_name("decoded.png")
        code, out, _ = run(capsys, "decompress", summary["output"], "-o", str(target), "--json")
        assert code == 0 and json.loads(out)["codec"] == "toy-image"
        assert np.abs(M.read_image(target).pixels.astype(int) - M.read_image(image_file).pixels).max() <= 2

    def test_default_decoded_name_protects_the_original(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        before = image_file.read_bytes()
        assert_user_error(run(capsys, "decompress", str(image_file) + ".nmc"), "already exists")
        assert image_file.read_bytes() == before

    def test_audio(self, capsys, audio_file: Path) -> None:  # noqa: ANN001
        assert run(capsys, "compress", str(audio_file), "-c", "toy-audio")[0] == 0
        code, out, _ = run(capsys, "decompress", str(audio_file) + ".nmc", "-o", str(audio_file.with_name("back.wav")), "--json")
        assert code == 0 and json.loads(out)["unit"] == "kbps"
        assert M.read_audio(audio_file.with_name("back.wav")).frames == 12000

    def test_quality_and_bitrate(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        code, out, _ = run(capsys, "compress", str(image_file), "-c", "toy-image", "-q", "coarse", "--json")
        assert json.loads(out)["setting"] == "coarse"
        code, out, _ = run(capsys, "compress", str(image_file), "-c", "toy-image", "-b", "2", "-f", "--json")
        assert json.loads(out)["setting"] == "coarse"
        code, out, _ = run(capsys, "compress", str(image_file), "-c", "toy-image", "--target-bpp", "100", "-f", "--json")
        assert json.loads(out)["setting"] == "fine" and json.loads(out)["rate"] <= 100

    def test_info(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        code, out, _ = run(capsys, "info", str(image_file) + ".nmc", "--json")
        data = json.loads(out)
        assert code == 0 and data["codec"] == "toy-image" and data["packet_count"] == 3
        assert data["file_bytes"] == Path(str(image_file) + ".nmc").stat().st_size

    def test_stdin_stdout(self, image_file: Path, tmp_path: Path) -> None:
        enc = subprocess.run([*NMC, "compress", "-", "-c", "toy-image", "-o", "-"], input=image_file.read_bytes(), capture_output=True, cwd=ROOT)
        assert enc.returncode == 0, enc.stderr
        dec = subprocess.run([*NMC, "decompress", "-", "-o", "-"], input=enc.stdout, capture_output=True, cwd=ROOT)
        assert dec.returncode == 0 and dec.stdout.startswith(b"\x89PNG")


class TestBadInput:
    def test_missing_file(self, capsys, tmp_path: Path) -> None:  # noqa: ANN001
        assert_user_error(run(capsys, "compress", str(tmp_path / "nope.png")), "no such file")
        assert_user_error(run(capsys, "decompress", str(tmp_path / "nope.nmc")), "no such file")

    def test_unsupported_and_empty(self, capsys, tmp_path: Path) -> None:  # noqa: ANN001
        (tmp_path / "notes.txt").write_text("hello")
        assert_user_error(run(capsys, "compress", str(tmp_path / "notes.txt")), "unsupported")
        (tmp_path / "empty.png").write_bytes(b"")
        assert_user_error(run(capsys, "compress", str(tmp_path / "empty.png"), "-c", "toy-image"), "empty")
        (tmp_path / "empty.nmc").write_bytes(b"")
        assert_user_error(run(capsys, "decompress", str(tmp_path / "empty.nmc")), "empty")
        assert files_in(tmp_path) == {"notes.txt", "empty.png", "empty.nmc"}

    def test_unreadable_media(self, capsys, tmp_path: Path) -> None:  # noqa: ANN001
        (tmp_path / "fake.png").write_bytes(b"\x89PNG but not really")
        assert_user_error(run(capsys, "compress", str(tmp_path / "fake.png"), "-c", "toy-image"), "cannot read image")
        assert files_in(tmp_path) == {"fake.png"}

    def test_wrong_codec_for_media(self, capsys, audio_file: Path) -> None:  # noqa: ANN001
        assert_user_error(run(capsys, "compress", str(audio_file), "-c", "toy-image"), "codes image")
        assert_user_error(run(capsys, "compress", str(audio_file), "-c", "nosuch"), "unknown codec")

    def test_broken_ply(self, capsys, tmp_path: Path) -> None:  # noqa: ANN001
        (tmp_path / "s.ply").write_bytes(b"ply\n")
        assert_user_error(run(capsys, "compress", str(tmp_path / "s.ply")), "not a Gaussian-splatting .ply")
        assert files_in(tmp_path) == {"s.ply"}

    def test_corrupt_and_truncated_files(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        data = Path(str(image_file) + ".nmc").read_bytes()
        bad = image_file.with_name("bad.nmc")
        for variant, fragment in [
            (b"GIF89a" + data[6:], "magic"),
            (data[:4] + b"\x07" + data[5:], "version"),
            (data[: len(data) // 2], "truncated"),
            (data[:-30] + bytes([data[-30] ^ 1]) + data[-29:], "damaged"),
        ]:
            bad.write_bytes(variant)
            assert_user_error(run(capsys, "decompress", str(bad)), fragment)
            assert not bad.with_name("bad.png").exists()
            if fragment in ("magic", "version"):
                assert_user_error(run(capsys, "info", str(bad)), fragment)
            else:  # the header is intact: info lists the damaged packets
                code, out, err = run(capsys, "info", str(bad))  # the text goes to stderr (stdout: --json only)
                assert code == 0 and "damaged_packets: [" in out + err and "damaged_packets: []" not in out + err

    def test_weights_mismatch(self, capsys, image_file: Path, monkeypatch) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        monkeypatch.setattr(toycodec.ToyImage, "weights_hash", lambda self: "f" * 64)
        assert_user_error(run(capsys, "decompress", str(image_file) + ".nmc", "-o", str(image_file.with_name("x.png"))), "weights")
        assert not image_file.with_name("x.png").exists()

    def test_no_overwrite_without_force(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        out = image_file.with_name("keep.nmc")
        out.write_bytes(b"precious")
        assert_user_error(run(capsys, "compress", str(image_file), "-c", "toy-image", "-o", str(out)), "already exists")
        assert out.read_bytes() == b"precious"

    def test_failed_decode_leaves_no_partial_output(self, capsys, audio_file: Path) -> None:  # noqa: ANN001
        run(capsys, "compress", str(audio_file), "-c", "toy-audio")
        src = Path(str(audio_file) + ".nmc")
        data = bytearray(src.read_bytes())
        data[-20] ^= 0xFF  # damage the last packet: earlier blocks are already written
        src.write_bytes(bytes(data))
        assert_user_error(run(capsys, "decompress", str(src), "-o", str(audio_file.with_name("back.wav"))), "damaged")
        assert files_in(audio_file.parent) == {"tone.wav", "tone.wav.nmc"}


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "nmc.cli.main", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("compress", "decompress", "info", "models", "batch"):
        assert command in out


def test_models_lists_no_test_codecs() -> None:
    out = subprocess.run([sys.executable, "-m", "nmc.cli.main", "models", "--json"], capture_output=True, text=True, check=True).stdout
    names = {row["codec"] for row in json.loads(out or "[]")}
    assert not any(n.startswith("toy") for n in names)
    assert "toy-image" in registry.available()  # registered in this test process only


def test_mono_and_output_sample_rate(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    import soundfile as sf

    src = tmp_path / "stereo.wav"
    t = np.arange(8000) / 8000
    sf.write(src, np.stack([np.sin(2 * np.pi * 200 * t), np.zeros_like(t)], axis=1).astype(np.float32) * 0.5, 8000)
    assert run(capsys, "compress", str(src), "-c", "toy-audio", "--mono")[0] == 0
    code, out, _ = run(capsys, "info", str(src) + ".nmc", "--json")
    assert json.loads(out)["media"]["channels"] == 1 and json.loads(out)["media"]["downmixed_from"] == 2
    back = tmp_path / "back.wav"
    assert run(capsys, "decompress", str(src) + ".nmc", "-o", str(back), "--sample-rate", "16000")[0] == 0
    audio = M.read_audio(back)
    assert (audio.sample_rate, audio.channels) == (16000, 1) and abs(audio.frames - 16000) <= 2


def assert_one_error_line(err: bytes | str, fragment: str) -> None:
    text = err.decode() if isinstance(err, bytes) else err
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nmc: error:") and fragment in lines[0], text


class TestPipes:
    """stdin and stdout as real pipes (non-seekable), in subprocesses."""

    def test_audio_to_a_pipe_is_a_valid_wav(self, capsys, audio_file: Path) -> None:  # noqa: ANN001
        run(capsys, "compress", str(audio_file), "-c", "toy-audio")
        data = Path(str(audio_file) + ".nmc").read_bytes()
        dec = subprocess.run([*NMC, "decompress", "-", "-o", "-"], input=data, capture_output=True, cwd=ROOT)
        assert dec.returncode == 0 and b"Exception" not in dec.stderr and b"Traceback" not in dec.stderr, dec.stderr
        samples, rate = sf.read(io.BytesIO(dec.stdout), dtype="int16")
        reference = audio_file.with_name("ref.wav")
        run(capsys, "decompress", str(audio_file) + ".nmc", "-o", str(reference))
        assert rate == 8000 and np.array_equal(samples, sf.read(reference, dtype="int16")[0])

    def test_failed_decode_writes_nothing_to_stdout(self, capsys, audio_file: Path) -> None:  # noqa: ANN001
        run(capsys, "compress", str(audio_file), "-c", "toy-audio")
        data = Path(str(audio_file) + ".nmc").read_bytes()
        dec = subprocess.run([*NMC, "decompress", "-", "-o", "-"], input=data[: len(data) * 2 // 3], capture_output=True, cwd=ROOT)
        assert dec.returncode == 1 and dec.stdout == b""
        assert_one_error_line(dec.stderr, "truncated")

    def test_json_counts_stdin_bytes(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        data = Path(str(image_file) + ".nmc").read_bytes()
        dec = subprocess.run([*NMC, "decompress", "-", "-o", str(image_file.with_name("back.png")), "--json"], input=data, capture_output=True, cwd=ROOT)
        summary = json.loads(dec.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert summary["bytes"] == len(data) and summary["rate"] == pytest.approx(8 * len(data) / (40 * 56))

    def test_json_never_mixes_with_data_on_stdout(self, image_file: Path) -> None:
        enc = subprocess.run([*NMC, "compress", "-", "-c", "toy-image", "-o", "-", "--json"], input=image_file.read_bytes(), capture_output=True, cwd=ROOT)
        assert enc.returncode == 0
        assert api.decompress(enc.stdout).pixels.shape == (40, 56, 3)  # the .nmc bytes alone
        assert json.loads(enc.stderr)["bytes"] == len(enc.stdout)

    @pytest.mark.parametrize("args", [["models", "--json"], ["info", "--help"], ["compress", "-", "-c", "toy-image", "-o", "-"]])
    def test_a_closed_stdout_is_not_an_error(self, image_file: Path, args: list[str]) -> None:
        read, write = os.pipe()
        os.close(read)  # the reader is gone before nmc writes (`nmc ... | head -c 0`)
        with open(image_file, "rb") as stdin:
            p = subprocess.run([*NMC, *args], stdin=stdin, stdout=write, stderr=subprocess.PIPE, cwd=ROOT)
        os.close(write)
        assert p.returncode != 0 and p.stderr == b"", p.stderr


class TestSignals:
    @pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
    def test_signal_removes_the_temporary_output(self, capsys, audio_file: Path, sig: int, code: int, word: str) -> None:  # noqa: ANN001
        run(capsys, "compress", str(audio_file), "-c", "toy-audio")
        p = subprocess.Popen([*SLOW_NMC, "decompress", str(audio_file) + ".nmc", "-o", str(audio_file.with_name("back.wav"))], stderr=subprocess.PIPE, cwd=ROOT, preexec_fn=default_sigint)
        deadline = time.monotonic() + 30
        while files_in(audio_file.parent) == {"tone.wav", "tone.wav.nmc"} and time.monotonic() < deadline:
            time.sleep(0.05)  # until the temporary output exists
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
        assert p.returncode == code
        assert_one_error_line(err, word)
        assert files_in(audio_file.parent) == {"tone.wav", "tone.wav.nmc"}


class TestCraftedHeaders:
    """Headers with a valid CRC and bad values: one line, nothing written, nothing allocated."""

    def craft(self, capsys, path: Path, codec: str, edit) -> Path:  # noqa: ANN001
        run(capsys, "compress", str(path), "-c", codec)
        bad = path.with_name("bad.nmc")
        bad.write_bytes(with_header(Path(str(path) + ".nmc").read_bytes(), edit))
        return bad

    def test_zero_sample_rate(self, capsys, audio_file: Path) -> None:  # noqa: ANN001
        bad = self.craft(capsys, audio_file, "toy-audio", lambda h: h["media"].update(sample_rate=0))
        assert_user_error(run(capsys, "decompress", str(bad), "-o", str(bad.with_name("x.wav"))), "media.sample_rate")
        assert_user_error(run(capsys, "info", str(bad)), "media.sample_rate")
        assert not bad.with_name("x.wav").exists()

    def test_media_kind_of_another_codec(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        bad = self.craft(capsys, image_file, "toy-image", lambda h: h["media"].update(kind="audio", sample_rate=1, frames=1, channels=1))
        assert_user_error(run(capsys, "decompress", str(bad), "-o", str(bad.with_name("x.png"))), "codes image")
        assert not bad.with_name("x.png").exists()

    @pytest.mark.parametrize("value", [40.5, "40", None, True, [40], -40])
    def test_wrong_type_in_a_size_field(self, capsys, image_file: Path, value: object) -> None:  # noqa: ANN001
        bad = self.craft(capsys, image_file, "toy-image", lambda h: h["media"].update(height=value))
        assert_user_error(run(capsys, "decompress", str(bad), "-o", str(bad.with_name("x.png"))), "media.height")
        assert_user_error(run(capsys, "info", str(bad)), "media.height")
        assert not bad.with_name("x.png").exists()

    def test_huge_image_is_refused_before_decoding(self, capsys, image_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
        bad = self.craft(capsys, image_file, "toy-image", lambda h: h["media"].update(width=40000, height=40000, channels=4))
        monkeypatch.setattr(toycodec.ToyImage, "decode", lambda *a, **k: pytest.fail("the decoder ran"))
        assert_user_error(run(capsys, "decompress", str(bad), "-o", str(bad.with_name("x.png"))), "pixels")


class TestOutputChecks:
    @pytest.mark.parametrize("name", ["decoded", "out.xyz"])
    def test_unknown_output_format(self, capsys, image_file: Path, name: str) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        assert_user_error(run(capsys, "decompress", str(image_file) + ".nmc", "-o", str(image_file.with_name(name))), "cannot write image")
        assert files_in(image_file.parent) == {"photo.png", "photo.png.nmc"}

    def test_existing_output_is_refused_before_decoding(self, capsys, image_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        monkeypatch.setattr(toycodec.ToyImage, "decode", lambda *a, **k: pytest.fail("the decoder ran"))
        assert_user_error(run(capsys, "decompress", str(image_file) + ".nmc"), "already exists")

    def test_weights_mismatch_names_both_full_hashes(self, capsys, image_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        written = toycodec.ToyImage().weights_hash()
        other = written[:12] + "0000" if not written.endswith("0000") else written[:12] + "ffff"
        monkeypatch.setattr(toycodec.ToyImage, "weights_hash", lambda self: other)
        _, _, err = result = run(capsys, "decompress", str(image_file) + ".nmc", "-o", str(image_file.with_name("x.png")))
        assert_user_error(result, "weights")
        assert written in err and other in err


class TestRecover:
    """`--recover` end to end (`nmc` in a subprocess): a codec that can recover decodes around a lost
    packet; without the flag, or with a codec that cannot, the file is refused in one line."""

    def nmc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NMC, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    def test_lost_packet(self, tmp_path: Path, image_file: Path) -> None:
        src = tmp_path / "x.nmc"
        assert self.nmc("compress", str(image_file), "-c", "toy-image", "-q", "fine", "-o", str(src)).returncode == 0
        good = self.nmc("decompress", str(src), "-o", str(tmp_path / "good.png"))
        assert good.returncode == 0, good.stderr
        data = bytearray(src.read_bytes())
        data[-8 - 40] ^= 0x55  # inside the last packet (rows 32-39): its CRC no longer matches
        src.write_bytes(bytes(data))
        refused = self.nmc("decompress", str(src), "-o", str(tmp_path / "out.png"))
        assert refused.returncode == 1 and refused.stderr.strip().startswith("nmc: error:") and "checksum" in refused.stderr
        recovered = self.nmc("decompress", str(src), "-o", str(tmp_path / "out.png"), "--recover")
        assert recovered.returncode == 0, recovered.stderr
        assert "recovered 1 of 3 packets (lost or damaged: [2])" in recovered.stderr  # one line saying what was filled in
        out, ref = M.read_image(tmp_path / "out.png").pixels, M.read_image(tmp_path / "good.png").pixels
        assert np.array_equal(out[:32], ref[:32]) and not np.array_equal(out[32:], ref[32:])
        assert (out[32:] == out[32, 0]).all()  # the lost band: one flat value (the toy codec's concealment)

    def test_refused_at_the_door_for_a_codec_that_cannot_recover(self, tmp_path: Path, audio_file: Path) -> None:
        src = tmp_path / "x.nmc"
        assert self.nmc("compress", str(audio_file), "-c", "toy-audio", "-o", str(src)).returncode == 0
        p = self.nmc("decompress", str(src), "-o", str(tmp_path / "out.wav"), "--recover")
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert p.returncode == 1 and len(lines) == 1 and "toy-audio cannot recover lost packets" in lines[0]
        assert not (tmp_path / "out.wav").exists()


def test_packets_refused_by_a_codec_that_does_not_interleave(capsys, tmp_path: Path, image_file: Path) -> None:  # noqa: ANN001
    out = tmp_path / "x.nmc"
    assert_user_error(run(capsys, "compress", str(image_file), "-c", "toy-image", "--packets", "16", "-o", str(out)), "--packets: codec toy-image")
    assert_user_error(run(capsys, "compress", str(image_file), "-c", "toy-image", "--conceal-check", "-o", str(out)), "--conceal-check: codec toy-image")
    assert not out.exists()


def test_usage_error_is_one_line(capsys) -> None:  # noqa: ANN001
    code, _, err = run(capsys, "compress", "x.png", "--bogus")
    assert code == 2
    assert_one_error_line(err, "--bogus")
