"""Build mcquic's training photos in `.data/images/` (ignored; carried to the GPU machine).

    python scripts/prepare_images.py            # -> .data/images/PACKAGE/PHOTO[@SIDE].webp, prints count and MiB

Sources: every photo of `../shared/data/train/images` plus the files listed in
`data/images_extra.json` (Debian packages, fetched with `apt-get download` into `.cache/debs`,
each checked against its sha256). Large photos are downscaled with an area (box) filter, so
random crops look like the dev photos (themselves downscaled originals) instead of soft,
noisy full-resolution pixels; high-resolution extras are also stored at a second, coarser
scale (an entry's `sides` lists the scales it keeps instead). Each photo goes to a folder named
after its source package, its scales named `PHOTO@SIDE`: training holds out whole photos and
can balance the sources by folder (models/trainkit/images.py). Everything is written as WebP
(quality 88, ~39 dB against its source) to stay within the 20.5 MiB that a device call can carry
beside the slim vqgan weights. Refuses reserved packages and dev-set source files.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import typer
from PIL import Image

RESERVED = {"ktuberling-data", "lomiri-wallpapers-16.04", "plasma-workspace-wallpapers"}  # held-out evaluation
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}
Image.MAX_IMAGE_PIXELS = 200_000_000  # the largest wallpapers have 44 MP


def apt_download(package: str, version: str, suite: str, sources: dict[str, str], debs: Path) -> Path:
    """The cached `.deb` of `package=version`, downloaded with apt-get (a private apt state for other suites)."""
    found = sorted(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))  # apt writes an epoch's colon as %3a
    if found:
        return found[0]
    debs.mkdir(parents=True, exist_ok=True)
    opts: list[str] = []
    if suite in sources:  # e.g. bullseye: its own lists under .cache/debs/apt-SUITE, the system's apt untouched
        state = (debs / f"apt-{suite}").resolve()
        (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (state / "sources.list").write_text(sources[suite] + "\n")
        opts = [f"-oDir::Etc::SourceList={state}/sources.list", "-oDir::Etc::SourceParts=/dev/null",
                f"-oDir::State::Lists={state}/lists", f"-oDir::Cache={state}/cache"]  # fmt: skip
        if not any((state / "lists").glob("*Packages*")):
            subprocess.run(["apt-get", *opts, "update", "-qq"], check=True)
    subprocess.run(["apt-get", *opts, "download", f"{package}={version}"], cwd=debs, check=True, stdout=subprocess.DEVNULL)
    return apt_download(package, version, "", {}, debs)


def deb_members(deb: Path, members: set[str]) -> dict[str, bytes]:
    """Bytes of the named files inside a `.deb` (its data archive, read as a stream)."""
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for info in tf:
            name = info.name.removeprefix("./")
            if name in members and info.isfile():
                out[name] = tf.extractfile(info).read()  # type: ignore[union-attr]
    if missing := members - out.keys():
        raise SystemExit(f"{deb.name}: no member {sorted(missing)}")
    return out


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    """Area-filtered (box) resize so that the long side is at most `max_side`."""
    s = max_side / max(im.size)
    return im if s >= 1 else im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BOX)


def main(
    train: Path = Path("../shared/data/train/images"),  # the project's training photos (never dev)
    manifest: Path = Path("data/images_extra.json"),  # extra photos from Debian packages
    shared_manifest: Path = Path("../shared/data/MANIFEST.json"),  # its dev entries are refused; train entries name their package
    out: Path = Path(".data/images"),  # rebuilt from scratch
    debs: Path = Path(".cache/debs"),
    max_side: int = 640,  # long side of the shared training photos after downscaling
    extra_sides: str = "1536,768",  # scales stored for each extra photo (only those smaller than the photo)
    min_side: int = 256,  # drop photos whose short side ends up below one training crop
    quality: int = 88,  # WebP quality (method 6): ~39 dB PSNR against the downscaled source
    budget_mib: float = 20.5,  # fail if the result is larger (a GPU call carries it beside the slim weights: DEVNOTES)
) -> None:
    if "dev" in train.resolve().parts:
        raise typer.BadParameter(f"refusing to build training data from a dev set: {train}")
    shared = json.loads(shared_manifest.read_text())
    dev = [e for e in shared if e.get("split") == "dev"]
    dev_sha, dev_members = {e["source_sha256"] for e in dev}, {(e["package"], e["member"]) for e in dev}
    extra = json.loads(manifest.read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    kept, dropped = 0, []

    def write(im: Image.Image, package: str, photo: str, side: int | None = None) -> None:
        """Store `im` as PACKAGE/PHOTO[@SIDE].webp; an `@` of the photo's own name (e.g. `land@2x.jpg`) becomes `-`, since
        `@` separates a photo from its scale (models/trainkit/images.photo_of)."""
        nonlocal kept
        name = photo.replace("@", "-") + (f"@{side}" if side else "")
        if min(im.size) < min_side:
            dropped.append(f"{name} {im.size[0]}x{im.size[1]}")
            return
        (out / package).mkdir(exist_ok=True)
        im.save(out / package / f"{name}.webp", "WEBP", quality=quality, method=6)
        kept += 1

    package_of = {Path(e["file"]).name: e["package"] for e in shared if e.get("split") == "train"}
    for path in sorted(p for p in train.iterdir() if p.suffix.lower() in IMAGE_EXTS):
        write(downscale(Image.open(path).convert("RGB"), max_side), package_of[path.name], path.stem)

    by_deb: dict[tuple[str, str, str], list[dict]] = {}
    for e in extra["files"]:
        if e["package"] in RESERVED or e["sha256"] in dev_sha or (e["package"], e["member"]) in dev_members:
            raise SystemExit(f"{manifest}: {e['package']} {e['member']} is reserved or a dev-set source")
        by_deb.setdefault((e["package"], e["version"], e["suite"]), []).append(e)
    sides = sorted((int(s) for s in extra_sides.split(",")), reverse=True)
    for (package, version, suite), entries in by_deb.items():
        data = deb_members(apt_download(package, version, suite, extra.get("suites", {}), debs), {e["member"] for e in entries})
        for e in entries:
            raw = data[e["member"]]
            if hashlib.sha256(raw).hexdigest() != e["sha256"]:
                raise SystemExit(f"{package} {e['member']}: sha256 differs from {manifest}")
            im = Image.open(io.BytesIO(raw)).convert("RGB")
            own = e.get("sides", sides)  # an entry may keep fewer scales (the build's budget)
            for side in [s for s in own if s < max(im.size)] or [max(im.size)]:
                write(downscale(im, side), package, Path(e["member"]).stem, side)

    size = sum(p.stat().st_size for p in out.rglob("*.webp")) / 2**20
    print(f"{out}: {kept} images, {size:.2f} MiB ({len(extra['files'])} extra photos from {len(by_deb)} packages)")
    if dropped:
        print(f"dropped (short side < {min_side}): {', '.join(dropped)}")
    if size > budget_mib:
        raise SystemExit(f"{out} holds {size:.2f} MiB, over the {budget_mib} MiB budget: lower --max-side, --extra-sides or --quality")


if __name__ == "__main__":
    typer.run(main)
