"""Speech data for hificodec: the unseen-speaker dev split and the compact training set.

    python scripts/prepare_speech.py split      # write data/speech_heldout.txt and data/speech_unseen.txt
    python scripts/prepare_speech.py sources    # fetch the added Debian packages, write data/speech_added.json
    python scripts/prepare_speech.py build      # .data/speech/*.opus: the training speech
    python scripts/prepare_speech.py dev-unseen # .data/dev-unseen/*.flac: the listed clips, for `nmc eval`
    python scripts/prepare_speech.py opus-check # how close 16 kHz Opus is to its source, per bitrate

Training speech = ../shared/data/train/speech minus every file of the held-out speakers (three
Asterisk voices capped, SHARED_CAP_MINUTES), plus the added sources of data/speech_added.json
(checked against their sha256), each clip resampled to 16 kHz mono (soxr, as train.py does),
scaled down where it exceeds full scale (some KLettres Vorbis files decode to peaks of 2-61),
silence at its ends cut to SILENCE_KEEP_S, and the clips of one speaker concatenated into Ogg
Opus files of about CHUNK_S seconds (few headers, soundfile reads them). The held-out speakers
never reach .data/speech. See docs/DATA.md.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import typer

SR = 16_000
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SPLIT_DIR = ROOT / "data"
HELDOUT_LIST = SPLIT_DIR / "speech_heldout.txt"  # every training file of a held-out speaker
UNSEEN_LIST = SPLIT_DIR / "speech_unseen.txt"    # the dev-unseen clips (a subset of the above)
ADDED_MANIFEST = SPLIT_DIR / "speech_added.json"
PKG_DIR = ROOT / ".cache" / "speech-pkgs"   # downloaded .deb files, unpacked; not under .data (carried)

# Held-out speakers: the Asterisk fr-CA voice (June Wallack) and six KLettres languages, each read
# by its own volunteer(s) who read no other language (KLettres handbook credits + a speaker-embedding
# check, docs/DATA.md). Not in the dev set either: dev uses Asterisk es and KLettres cs/de/es/ml/nl/pt_BR.
HELD_OUT_ASTERISK = ("asterisk-core-sounds-fr-g722",)
HELD_OUT_KLETTRES = ("fr", "he", "hu", "it", "lt", "nb")
UNSEEN_ASTERISK_CLIPS = 16   # sentence prompts of 2.5-10 s
UNSEEN_KLETTRES_CLIPS = 3    # per language, from its longer (mostly syllable) clips
SEED = 12

SILENCE_KEEP_S = 0.25   # silence kept at each end of a clip
SILENCE_DB = 50.0       # a 10 ms frame is silent when this far below the clip's loudest frame
FADE_S = 0.005          # fade at each clip end (some sources are cut hard inside the voice)
GAP_S = 0.05            # zeros between concatenated clips
CHUNK_S = 60.0          # target length of one packed training file
KBPS = 18.0             # Opus VBR target of the training files (opus-check, docs/DATA.md)


@dataclass(frozen=True)
class Source:
    """An added Debian package: which members, which speaker group, which license."""
    package: str
    version: str
    pattern: str          # glob of members, relative to the unpacked package root
    license: str
    exclude: tuple[str, ...] = ()
    max_minutes: float = 0.0   # per group, by stored length; 0 = all, else a seeded subsample
    min_band_khz: float = 0.0  # skip members whose band_edge is below this (narrowband copies)

    def group(self, member: str) -> str:
        parts = Path(member).parts
        if self.package == "hedgewars-data":
            return f"hedgewars_{parts[-2]}"           # one voice pack
        if self.package == "gcin-voice":
            return f"gcin_{Path(member).stem}"        # 3.ogg and 5.ogg are two speakers
        if self.package == "tuxpaint-stamps-default":
            return f"tuxpaint_{Path(member).stem.rsplit('_desc_', 1)[1]}"   # one reader per language
        raise ValueError(self.package)


TUXPAINT = "usr/share/tuxpaint/stamps/**/*_desc_{}.ogg"
TUXPAINT_LICENSE = "GPL-2 (tuxpaint-stamps, Bill Kendrick et al.; descriptive sounds by {})"
SOURCES = (
    # Voice-acted game lines (shouted, expressive, 44.1/48 kHz); "Robot" is vocoded, left out.
    Source("hedgewars-data", "1.0.2-6", "usr/share/games/hedgewars/Data/Sounds/voices/*/*.ogg",
           "GFDL-1.3 (Data/Sounds/*, Andrey Korotaev / Hedgewars project)",
           exclude=("usr/share/games/hedgewars/Data/Sounds/voices/Robot/",)),
    # Mandarin syllables by two speakers (44.1 kHz); isolated syllables, so each is capped.
    Source("gcin-voice", "0~20170223-3", "usr/share/gcin-voice/ogg/*/3.ogg",
           "GPL-3 or LGPL-3 (Edward Der-Hua Liu)", max_minutes=3.0),
    Source("gcin-voice", "0~20170223-3", "usr/share/gcin-voice/ogg/*/5.ogg",
           "CC-BY-3.0 (ChionMeilin, voice: Chu Lo)", max_minutes=3.0),
    # Tux Paint's spoken stamp descriptions: short phrases read by one volunteer per language
    # (credits in the package changelog). The male-range readers (ru, fr) get more minutes than the
    # female ones; ca (mostly narrowband), bg (low-rate Vorbis artefacts), es (7 % of samples clipped),
    # da (5 kHz band) and nl, lt, ml, pt_BR (too few files; KLettres readers of those languages are
    # dev or held-out voices) are left out (docs/DATA.md).
    *(Source("tuxpaint-stamps-default", "2022.06.04-1", TUXPAINT.format(lang), TUXPAINT_LICENSE.format(reader),
             max_minutes=minutes, min_band_khz=5.0)
      for lang, reader, minutes in (("ru", "Edwin Veber", 12.0), ("fr", "PaulK", 12.0),
                                    ("be", "Kseniya Buraya", 5.0), ("el", "Kiriaki Serafeim", 5.0),
                                    ("ro", "Tabbytha", 5.0))),
)

# Shared training voices capped (minutes by stored length, seeded subsample): the Asterisk en/es
# voice alone was 44 % of the training speech; the cap makes room for the added voices in 16 MiB.
SHARED_CAP_MINUTES = {"ast_en": 12.0, "ast_es": 12.0, "ast_ru": 12.0}

app = typer.Typer(add_completion=False, help=__doc__)


# --- which training files belong to held-out speakers -------------------------------------------

def speech_manifest() -> list[dict]:
    return [e for e in json.loads((SHARED / "MANIFEST.json").read_text()) if e["kind"] == "speech"]


def speaker(entry: dict) -> str:
    """A speaker-group name for a file of ../shared/data (one voice per group)."""
    if entry["package"].startswith("asterisk-core-sounds-"):
        return "ast_" + entry["package"].split("-")[3]
    if entry["package"] == "klettres-data":
        return "klettres_" + entry["member"].split("/")[3]
    raise ValueError(entry["package"])


def held_out(entry: dict) -> bool:
    return entry["package"] in HELD_OUT_ASTERISK or (
        entry["package"] == "klettres-data" and entry["member"].split("/")[3] in HELD_OUT_KLETTRES)


def duration(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


@app.command()
def split() -> None:
    """Write the held-out file list and pick the dev-unseen clips from it (seeded)."""
    entries = [e for e in speech_manifest() if e["split"] == "train" and held_out(e)]
    rng = random.Random(SEED)
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by_speaker[speaker(e)].append(e)
    chosen: list[str] = []
    for name, group in sorted(by_speaker.items()):
        # Asterisk's silence/N prompts are N seconds of silence: not speech to measure on
        durs = {e["file"]: duration(SHARED / e["file"]) for e in group if "/silence/" not in e["member"]}
        if name.startswith("ast_"):
            pool = sorted(f for f, d in durs.items() if 2.5 <= d <= 10.0)
            chosen += rng.sample(pool, UNSEEN_ASTERISK_CLIPS)
        else:
            median = float(np.median(list(durs.values())))
            pool = sorted(f for f, d in durs.items() if d >= median)
            chosen += rng.sample(pool, UNSEEN_KLETTRES_CLIPS)
    SPLIT_DIR.mkdir(exist_ok=True)
    header = "# paths relative to ../shared/data; written by scripts/prepare_speech.py split\n"
    HELDOUT_LIST.write_text(header + "".join(f"{e['file']}\n" for e in sorted(entries, key=lambda e: e["file"])))
    UNSEEN_LIST.write_text(header + "".join(f"{f}\n" for f in sorted(chosen)))
    minutes = sum(duration(SHARED / f) for f in chosen) / 60
    print(f"held out: {len(entries)} files of {len(by_speaker)} speakers; dev-unseen: {len(chosen)} clips, {minutes:.1f} min")


def read_list(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


# --- added sources ------------------------------------------------------------------------------

def unpack(package: str, version: str) -> Path:
    """`apt-get download` the pinned version once, unpack it under .data/pkgs/<package>/."""
    root = PKG_DIR / package
    if not root.exists():
        PKG_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=PKG_DIR, check=True)
        deb = next(PKG_DIR.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@app.command()
def sources() -> None:
    """Fetch the added packages and record every used member in data/speech_added.json."""
    rows = []
    rng = random.Random(SEED)
    narrow = 0
    for src in SOURCES:
        root = unpack(src.package, src.version)
        paths = [p for p in sorted(root.glob(src.pattern)) if not p.relative_to(root).as_posix().startswith(src.exclude)]
        if src.max_minutes:
            paths = rng.sample(paths, len(paths))
        used: dict[str, float] = defaultdict(float)
        for path in paths:
            member = path.relative_to(root).as_posix()
            info = sf.info(str(path))
            seconds = info.frames / info.samplerate
            if src.max_minutes and used[src.group(member)] + seconds > src.max_minutes * 60:
                continue
            if src.min_band_khz and band_edge(path) < src.min_band_khz * 1000:
                narrow += 1
                continue
            used[src.group(member)] += seconds
            rows.append(dict(package=src.package, version=src.version, member=member, sha256=sha256(path),
                             license=src.license, group=src.group(member), sr=info.samplerate,
                             seconds=round(seconds, 3)))
    rows.sort(key=lambda r: (r["package"], r["member"]))
    ADDED_MANIFEST.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n")
    print(f"{len(rows)} files from {len({r['package'] for r in rows})} packages -> {ADDED_MANIFEST.relative_to(ROOT)}"
          f" ({narrow} narrowband files skipped)")


def band_edge(path: Path, floor_db: float = 50.0) -> float:
    """Highest frequency (Hz) whose 100 Hz band is within floor_db of the file's strongest band:
    about 4 kHz for copies that were once sampled at 8 kHz, 7-20 kHz for wideband recordings."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    power = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    bands = np.minimum(np.fft.rfftfreq(len(x), 1 / sr) // 100, sr // 200 - 1).astype(int)
    level = np.bincount(bands, power, sr // 200) / np.maximum(np.bincount(bands, None, sr // 200), 1)
    loud = np.flatnonzero(level > level.max() * 10 ** (-floor_db / 10))
    return float((loud.max() + 1) * 100) if len(loud) else 0.0


# --- building ----------------------------------------------------------------------------------

def load16k(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return (soxr.resample(x, sr, SR) if sr != SR else x).astype(np.float32)


def below_full_scale(x: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale a clip whose samples exceed full scale down to `peak` (the waveform itself is kept)."""
    top = float(np.abs(x).max(initial=0.0))
    return x * (peak / top) if top > 1.0 else x


def trim(x: np.ndarray) -> np.ndarray:
    """Cut silence at both ends down to SILENCE_KEEP_S and fade the ends."""
    hop = SR // 100
    n = len(x) // hop
    if n:
        e = 10 * np.log10(np.square(x[: n * hop].reshape(n, hop)).mean(axis=1) + 1e-12)
        loud = np.flatnonzero(e > e.max() - SILENCE_DB)
        keep = int(SILENCE_KEEP_S * SR)
        x = x[max(0, loud[0] * hop - keep): min(len(x), (loud[-1] + 1) * hop + keep)].copy()
    f = min(int(FADE_S * SR), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, f, dtype=np.float32))
    x[:f] *= ramp
    x[len(x) - f:] *= ramp[::-1]
    return x


def encode_opus(x: np.ndarray, out: Path, kbps: float) -> None:
    """16 kHz mono float32 -> Ogg Opus with ffmpeg's libopus (VBR), bit-exact container."""
    import imageio_ffmpeg  # the eval extra; only needed to build
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "f32le", "-ar", str(SR), "-ac", "1",
           "-i", "-", "-c:a", "libopus", "-b:a", f"{kbps}k", "-vbr", "on", "-compression_level", "10",
           "-application", "audio", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
           str(out)]
    subprocess.run(cmd, input=x.astype(np.float32).tobytes(), check=True)


def training_clips() -> dict[str, list[tuple[str, Path]]]:
    """Speaker group -> [(source label, path)] for every training clip, held-out speakers removed."""
    heldout = set(read_list(HELDOUT_LIST))
    groups: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for e in speech_manifest():
        if e["split"] == "train" and not held_out(e):
            assert e["file"] not in heldout
            label = e["package"] if e["package"] != "klettres-data" else "klettres-data (kept languages)"
            groups[speaker(e)].append((label, SHARED / e["file"]))
    for name, cap in SHARED_CAP_MINUTES.items():
        groups[name] = capped(groups[name], cap * 60)
    for row in distinct(json.loads(ADDED_MANIFEST.read_text())):
        path = unpack(row["package"], row["version"]) / row["member"]
        if sha256(path) != row["sha256"]:
            raise SystemExit(f"sha256 mismatch: {row['package']} {row['member']}")
        groups[row["group"]].append((row["package"], path))
    return groups


def distinct(rows: list[dict]) -> list[dict]:
    """The rows of the added list with one per content (sha256), the first kept: hedgewars-data (voice packs) and
    tuxpaint-stamps-default (stamps) ship some clips more than once, 130 extra copies in all, and a clip should not
    train at double weight."""
    seen: set[str] = set()
    return [r for r in rows if not (r["sha256"] in seen or seen.add(r["sha256"]))]


def capped(clips: list[tuple[str, Path]], seconds: float) -> list[tuple[str, Path]]:
    """A seeded subsample of clips whose stored lengths add up to at most `seconds`, in listed order."""
    order = list(range(len(clips)))
    random.Random(SEED).shuffle(order)
    keep, total = set(), 0.0
    for i in order:
        d = duration(clips[i][1])
        if total + d <= seconds:
            keep.add(i)
            total += d
    return [c for i, c in enumerate(clips) if i in keep]


@app.command()
def build(out: Path = ROOT / ".data" / "speech",
          kbps: float = typer.Option(KBPS, help="Opus bitrate (VBR target); see opus-check"),
          max_mib: float = typer.Option(16.0, help="fail when the training folder is larger")) -> None:
    """Build the training folder; print minutes per source."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    minutes: dict[str, float] = defaultdict(float)
    gap = np.zeros(int(GAP_S * SR), np.float32)
    for name, clips in sorted(training_clips().items()):
        chunk: list[np.ndarray] = []
        k = 0
        for label, path in clips:
            x = trim(below_full_scale(load16k(path)))
            chunk += [x, gap]
            minutes[label] += len(x) / SR / 60
            if sum(map(len, chunk)) >= CHUNK_S * SR:
                encode_opus(np.concatenate(chunk), out / f"{name}_{k:03d}.opus", kbps)
                chunk, k = [], k + 1
        if chunk:
            encode_opus(np.concatenate(chunk), out / f"{name}_{k:03d}.opus", kbps)
    size = sum(p.stat().st_size for p in out.glob("*.opus"))
    for label, m in sorted(minutes.items()):
        print(f"{label:40s} {m:6.1f} min")
    print(f"{'total':40s} {sum(minutes.values()):6.1f} min in {len(list(out.glob('*.opus')))} files, "
          f"{size / 2**20:.2f} MiB ({size * 8 / sum(minutes.values()) / 60 / 1000:.1f} kbit/s)")

    if size > max_mib * 2**20:
        raise SystemExit(f"{out} is {size / 2**20:.2f} MiB, above {max_mib} MiB: lower --kbps or the caps")


@app.command("dev-unseen")
def dev_unseen(out: Path = ROOT / ".data" / "dev-unseen") -> None:
    """The listed dev-unseen clips as 16-bit FLAC at their stored rate (scaled only where beyond full scale)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = read_list(UNSEEN_LIST)
    for rel in files:
        x, sr = sf.read(str(SHARED / rel), dtype="float32")
        sf.write(str(out / (Path(rel).stem + ".flac")), below_full_scale(x), sr, subtype="PCM_16")
    seconds = sum(duration(out / (Path(rel).stem + ".flac")) for rel in files)
    print(f"dev-unseen: {len(files)} clips, {seconds / 60:.1f} min -> {out}")


@app.command("opus-check")
def opus_check(rates: str = "12,16,20,24,32", per_group: int = 4) -> None:
    """PESQ-WB and per-band energy of 16 kHz Opus against the 16 kHz source, on a few clips per group."""
    from pesq import PesqError, pesq
    clips = [c for group in training_clips().values() for c in group[::max(1, len(group) // per_group)][:per_group]]
    sources = [trim(load16k(p)) for _, p in clips]
    print(f"{len(sources)} clips; band energy change in dB for 0-1, 1-2, ..., 7-8 kHz")
    with tempfile.TemporaryDirectory() as tmp:
        for kbps in map(float, rates.split(",")):
            scores, bands, nbytes, secs = [], [], 0, 0.0
            for i, x in enumerate(sources):
                path = Path(tmp) / f"{i}.opus"
                encode_opus(x, path, kbps)
                y, _ = sf.read(str(path), dtype="float32")
                m = min(len(x), len(y))
                nbytes, secs = nbytes + path.stat().st_size, secs + m / SR
                score = pesq(SR, x[:m], y[:m], "wb", on_error=PesqError.RETURN_VALUES)
                if score > 0:   # -1: too short or no speech detected
                    scores.append(score)
                bands.append(band_energy(y[:m]) - band_energy(x[:m]))
            db = " ".join(f"{v:+.1f}" for v in np.mean(bands, axis=0))
            print(f"{kbps:4.0f} kbit/s: real {nbytes * 8 / secs / 1000:5.1f} kbit/s, PESQ-WB mean {np.mean(scores):.2f} "
                  f"(5th pct {np.percentile(scores, 5):.2f}), bands {db}")


def band_energy(x: np.ndarray) -> np.ndarray:
    """Energy in dB of 8 bands of 1 kHz (1024-point frames, hop 256)."""
    n, hop = 1024, 256
    idx = np.arange(n)[None] + hop * np.arange(max(1, (len(x) - n) // hop))[:, None]
    spec = np.abs(np.fft.rfft(np.pad(x, (0, n))[idx] * np.hanning(n), axis=1)) ** 2
    return np.array([10 * np.log10(spec[:, b * 64:(b + 1) * 64].sum() + 1e-12) for b in range(8)])


if __name__ == "__main__":
    app()
