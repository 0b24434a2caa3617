"""The README's main job: compress and decompress every file in a folder, one summary line each.

    python scripts/demo.py samples [OUT_DIR]

Each media file is compressed with the default codec for its type (`--codec auto`), decoded
again, and compared with the original (PSNR / MS-SSIM for images, PESQ-WB / STOI for speech).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nmc.codec import media as M
from nmc.codec import metrics
from nmc.codec.errors import NmcError
from nmc.codec.files import compress_path, decompress_path


def quality(original: Path, decoded: Path) -> str:
    if M.media_kind(original) == "image":
        ref, dec = M.to_rgb8(M.read_image(original))[0], M.to_rgb8(M.read_image(decoded))[0]
        return f"PSNR {metrics.psnr(ref, dec):.2f} dB, MS-SSIM {metrics.ms_ssim(ref, dec):.4f}"
    ref_audio, dec_audio = M.read_audio(original), M.read_audio(decoded)
    ref, dec = ref_audio.to_array().mean(axis=1), dec_audio.to_array().mean(axis=1)
    args = (ref, ref_audio.sample_rate, dec, dec_audio.sample_rate)
    return f"PESQ-WB {metrics.pesq_wb(*args):.2f}, STOI {metrics.stoi(*args):.3f}"


def main(src: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in sorted(p for p in src.iterdir() if p.suffix.lower() in M.IMAGE_SUFFIXES | M.AUDIO_SUFFIXES):
        try:
            packed = compress_path(path, out / (path.name + ".nmc"), force=True)
            decoded = decompress_path(packed.output, force=True)
            print(f"{path.name}: {packed.codec} {packed.setting}, {packed.bytes} B = {packed.rate:.4g} {packed.unit}, {quality(path, Path(decoded.output))}")
        except NmcError as err:
            failures += 1
            print(f"{path.name}: error: {err}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "samples"), Path(sys.argv[2] if len(sys.argv) > 2 else "demo-out")))
