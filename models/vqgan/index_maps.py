"""The recovery model's training data: index maps of the training photos at every codebook size.

    python models/vqgan/index_maps.py --network models/vqgan/weights/vqgan.safetensors --out .data/vqgan_maps.safetensors
    python models/vqgan/index_maps.py --network vqgan.safetensors --ladder ladder.safetensors --out ...   # base + k-means labels
    python models/vqgan/index_maps.py --network W --ladder L --relabel OLD_MAPS --out ...  # another ladder, no encoding

The encoder runs once per photo variant (scales x h-flips x pixel shifts; each shift of 8 pixels gives
another index map of the same photo); its features are quantized with every codebook of the weights
file (the codec's own `Ladder.quantize`), or, for a base-only export, with the base codebook and
mapped to each rung by the ladder file's `rung.S.labels` (one extraction serves all rungs: what the
rungs' k-means codebooks give before fine-tuning, up to ties). The dev set is refused.

The file (safetensors): `maps.{S}` int16, every map of codebook size S flattened and concatenated,
for each size the network quantizes; `labels.{S}` int64 `[K]` for each rung taken from the ladder
(its maps are `labels[base map]`, made when read: the file stays small enough to carry to a GPU);
`codebook.{S}` fp32 `[S, d]`, each size's unit codes (the recovery model's token embeddings start
from them: similar codes, similar tokens); `shapes` int32 `[N, 2]`; `photo` int32 `[N]` (which
training photo); metadata: format, sizes, the base network's hash (`recovery.network_hash`), the variants.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from nmc.codec.weights import read_weights
from nmc.models.trainkit.corpus import training_files
from nmc.models.trainkit.images import IMAGE_EXTS, photo_of
from nmc.models.vqgan.network import Ladder, args_from_dict, base_of
from nmc.models.vqgan.recovery import network_hash

FORMAT = "nmc-vqgan-maps-1"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def load_network(network: Path, ladder: Path | None) -> tuple[Ladder, dict[int, torch.Tensor], dict[int, torch.Tensor], str]:
    """The codec's network, the labels mapping base indices to each label-only rung, every size's unit
    codes `[S, d]`, and the base network's hash."""
    w = read_weights(network)
    if "rungs" in w.args:
        net = Ladder.from_state_dict(w.state, w.args)
    else:  # a base export (train.py --export): no rungs
        net = Ladder.from_state_dict(w.state, {**w.args, "rungs": [], "rung_decoders": []})
    labels: dict[int, torch.Tensor] = {}
    codebooks = {s: net.unit_codes(s) for s in net.sizes}
    if ladder is not None:
        with safe_open(str(ladder), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118
                if key.endswith(".labels") and int(key.split(".")[1]) not in net.sizes:
                    s = int(key.split(".")[1])
                    labels[s] = f.get_tensor(key).long()
                    codebooks[s] = F.normalize(f.get_tensor(f"rung.{s}.codebook").float(), dim=1)
    return net, labels, codebooks, network_hash(base_of(w.state, w.args)[0])


def variants(rgb: np.ndarray, scales: list[float], flips: bool, shifts: list[int]) -> list[torch.Tensor]:
    """`[1, 3, H, W]` float images: each scale (antialiased resize), flipped or not, cropped by each shift."""
    out = []
    for s in scales:
        im = Image.fromarray(rgb)
        if s != 1:
            im = im.resize((max(16, round(im.width * s)), max(16, round(im.height * s))), Image.Resampling.LANCZOS)
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float().div_(255)
        for flip in (False, True) if flips else (False,):
            xf = x.flip(-1) if flip else x
            out += [xf[..., d:, d:] for d in shifts if min(xf.shape[-2:]) - d >= 16]
    return out


@app.command()
def main(
    network: Path = typer.Option(..., help="vqgan weights: the codec's file (rungs inside) or a base export with --ladder"),
    out: Path = Path(".data/vqgan_maps.safetensors"),
    data: Path = Path(".data/images"),  # training photos; never the dev set
    ladder: Path | None = None,  # ladder.py's file: rungs as labels of the base indices
    scales: str = "1,0.75,0.5",  # image scales
    flips: bool = True,  # h-flipped copies too
    shifts: str = "0,8",  # pixels cropped off the top and left (a shift of half a cell: other indices)
    device: str = "cpu",
    relabel: Path | None = None,  # an index-map file of the same base network: keep its base maps, take every rung from --ladder
) -> None:
    t0 = time.time()
    if relabel is not None:
        if ladder is None:
            raise typer.BadParameter("--relabel needs --ladder (the rungs' labels of the base indices)")
        relabel_maps(relabel, network, ladder, out)
        return
    net, labels, codebooks, base_hash = load_network(network, ladder)
    net.to(device)
    sizes = sorted({*net.sizes, *labels})
    scale_list, shift_list = [float(s) for s in scales.split(",")], [int(s) for s in shifts.split(",")]
    maps: dict[int, list[torch.Tensor]] = {s: [] for s in net.sizes}
    shapes, photos = [], []
    try:
        paths = training_files(data, IMAGE_EXTS)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    photo_id = {k: i for i, k in enumerate(dict.fromkeys(photo_of(path) for path in paths))}  # the scales of one photo: one id
    for p, path in enumerate(paths):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for x in variants(rgb, scale_list, flips, shift_list):
            y = net.features(x.to(device))
            for s in net.sizes:
                maps[s].append(net.quantize(y, s)[0].cpu().flatten().to(torch.int16))
            shapes.append(y.shape[-2:])
            photos.append(photo_id[photo_of(path)])  # train_recovery.py holds out whole photos by this id
        if p % 20 == 0:
            print(f"{p + 1}/{len(paths)} photos, {len(shapes)} maps, {time.time() - t0:.0f} s", flush=True)
    tensors = {f"maps.{s}": torch.cat(m) for s, m in maps.items()}
    tensors.update({f"labels.{s}": lab for s, lab in labels.items()})
    tensors.update({f"codebook.{s}": cb.float().contiguous() for s, cb in codebooks.items()})
    tensors["shapes"] = torch.tensor(shapes, dtype=torch.int32)
    tensors["photo"] = torch.tensor(photos, dtype=torch.int32)
    meta = {"format": FORMAT, "sizes": json.dumps(sizes), "network": base_hash, "photos": str(len(photo_id)),
            "variants": json.dumps({"scales": scale_list, "flips": flips, "shifts": shift_list, "ladder": str(ladder) if ladder else None})}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    cells = int(tensors["shapes"].prod(1).sum())  # per size
    print(f"{out}: {len(shapes)} maps of {len(paths)} photos, {cells} cells per size, sizes {sizes}, "
          f"{out.stat().st_size / 2**20:.1f} MiB, {time.time() - t0:.0f} s")  # fmt: skip


def relabel_maps(src: Path, network: Path, ladder: Path, out: Path) -> None:
    """`src`'s base-index maps with every rung of `ladder` as labels (no encoding: seconds). The rungs of a
    new ladder of the same base network then get training maps at once; a rung the network quantizes
    itself (fine-tuned) is still the ladder's label map here, as in `main`'s label-only rungs."""
    net, _, codebooks, base_hash = load_network(network, None)
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        if meta.get("format") != FORMAT:
            raise typer.BadParameter(f"--relabel {src}: not an index-map file")
        if meta["network"] != base_hash:
            raise typer.BadParameter(f"--relabel {src}: maps of network {meta['network']}, not {network}'s {base_hash}")
        base = max(json.loads(meta["sizes"]))
        tensors = {k: f.get_tensor(k) for k in ("shapes", "photo", f"maps.{base}")}
    with safe_open(str(ladder), framework="pt") as f:
        rungs = sorted(int(k.split(".")[1]) for k in f.keys() if k.endswith(".labels"))  # noqa: SIM118
        for s in rungs:
            tensors[f"labels.{s}"] = f.get_tensor(f"rung.{s}.labels").long()
            codes = codebooks[s] if s in codebooks else F.normalize(f.get_tensor(f"rung.{s}.codebook").float(), dim=1)
            tensors[f"codebook.{s}"] = codes.float().contiguous()
    tensors[f"codebook.{base}"] = codebooks[base].float().contiguous()
    variants = json.loads(meta.get("variants", "{}")) | {"ladder": str(ladder), "relabelled_from": str(src)}
    meta.update(sizes=json.dumps([*rungs, base]), variants=json.dumps(variants))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    print(f"{out}: the base maps of {src} with the rungs {rungs} of {ladder}, {out.stat().st_size / 2**20:.1f} MiB")


def read_maps(path: Path) -> tuple[dict[int, list[torch.Tensor]], list[int], dict[str, str], dict[int, torch.Tensor]]:
    """Per codebook size the list of `[h, w]` int64 maps, the photo of each map, the metadata, and
    per size its unit codes (none in files written before they were stored)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not an index-map file ({meta.get('format')!r})")
        shapes, photos = f.get_tensor("shapes").tolist(), f.get_tensor("photo").tolist()
        counts = [h * w for h, w in shapes]
        names = set(f.keys())
        flat = {s: f.get_tensor(f"maps.{s}").long() for s in json.loads(meta["sizes"]) if f"maps.{s}" in names}
        base = max(flat)
        flat.update({s: f.get_tensor(f"labels.{s}").long()[flat[base]] for s in json.loads(meta["sizes"]) if f"labels.{s}" in names})
        codebooks = {s: f.get_tensor(f"codebook.{s}") for s in json.loads(meta["sizes"]) if f"codebook.{s}" in names}
    maps = {s: [m.reshape(shape) for m, shape in zip(v.split(counts), shapes)] for s, v in sorted(flat.items())}
    return maps, photos, meta, codebooks


if __name__ == "__main__":
    app()
