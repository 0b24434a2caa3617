"""Give one operating point of an assembled vqgan weights file (a rung, or the base's) its own decoder, taken from a
recovery file.

`train_recovery.py --tune-decoder S` trains a copy of size S's decoder beside the recovery transformer
(`decoder.S.*` in the recovery file). When that copy also decodes intact maps better than the decoder the
rung uses, it becomes the rung's own (`rungs.S.g_s.*`, as `train.py --rung S --tune-decoder` would make it):
the codebook, the 1x1 convolutions and the priors stay as they are, so every file's indices and bits are
unchanged and only the pixels of size S change. The weights hash changes: retire the old one by name.
With `--recovery-out`, the recovery file is written again without that decoder (it is now the rung's own, so every
window decodes through it) and with its size-S binding renewed for the new weights (`decoder_hashes`): its transformer
was trained through exactly this decoder.

    python -P models/vqgan/rung_decoder.py --weights models/vqgan/weights/vqgan.safetensors \\
        --recovery .ckpt/rec-conceal-cpu/conceal.safetensors --size 1024 --out /tmp/vqgan.safetensors \\
        [--recovery-out /tmp/recovery.safetensors]
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from safetensors import safe_open
from safetensors.torch import save_file

from nmc.codec.weights import read_weights, write_weights
from nmc.models.vqgan.network import Ladder
from nmc.models.vqgan.recovery import decoder_hashes

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    weights: Path = typer.Option(..., help="the assembled vqgan weights file"),
    recovery: Path = typer.Option(..., help="a recovery file with decoder.SIZE.* (train_recovery.py --tune-decoder)"),
    size: int = typer.Option(..., help="the operating point (codebook size)"),
    out: Path = typer.Option(..., help="the new weights file"),
    note: str = "",  # why, for the file's report
    recovery_out: Path | None = typer.Option(None, help="the recovery file again, without this decoder, bound to the new weights"),
) -> None:
    w = read_weights(weights)
    sizes = [*w.args.get("rungs", []), w.args["codebook_size"]]  # the base's point may have a decoder of its own too
    if size not in sizes:
        raise typer.BadParameter(f"{weights} has no operating point of {size} codes (sizes: {sizes})")
    prefix = f"decoder.{size}."
    with safe_open(str(recovery), framework="pt") as f:
        rec_meta, rec = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    decoder = {k[len(prefix):]: v for k, v in rec.items() if k.startswith(prefix)}
    if not decoder:
        raise typer.BadParameter(f"{recovery} carries no decoder for size {size}")
    base = {k[len("g_s."):]: v for k, v in w.state.items() if k.startswith("g_s.")}
    if {k: tuple(v.shape) for k, v in decoder.items()} != {k: tuple(v.shape) for k, v in base.items()}:
        raise typer.BadParameter(f"{recovery}: the size-{size} decoder does not have the base decoder's tensors")
    state = {k: v for k, v in w.state.items() if not k.startswith(f"rungs.{size}.g_s.")}
    state |= {f"rungs.{size}.g_s.{k}": v.half() for k, v in decoder.items()}
    args = {**w.args, "rung_decoders": sorted({*w.args.get("rung_decoders", []), size})}
    report = {"network": w.report, "rung_decoder": {"size": size, "from": str(recovery), "note": note}}
    write_weights(out, type(w)(state, args, w.prior, report))
    print(f"{out}: rung {size} decodes with the decoder of {recovery}; rung decoders {args['rung_decoders']}")
    if recovery_out is not None:
        bindings = json.loads(rec_meta["codebooks"]) | {str(size): decoder_hashes(Ladder.from_state_dict(state, args))[size]}
        rec_meta |= {"codebooks": json.dumps(bindings), "decoders": json.dumps([s for s in json.loads(rec_meta.get("decoders", "[]")) if s != size])}
        save_file({k: v for k, v in rec.items() if not k.startswith(prefix)}, str(recovery_out), metadata=rec_meta)
        print(f"{recovery_out}: {recovery} without its size-{size} decoder, bound to {out}")


if __name__ == "__main__":
    app()
