"""A copy of the vqgan weights for a GPU call that trains one or a few operating points: the other rungs' own
decoders left out (those rungs decode with the base decoder in the copy).

A device call carries the working tree and its carry paths, 64 MiB in all. Since session 13 the weights hold five rung
decoders (7.6 MB each in fp16) and no longer fit beside the training photos. What a call on size S reads stays
byte-identical in the copy: the base network (its `network_hash`), and S's codebook, 1x1 convolutions and decoder (its
`decoder_hashes` entry). So a recovery file trained on the copy binds S in the full weights; its bindings of the left-out
sizes name the base decoder and bind nothing there. Hide the full file (`scripts/travel.sh hide`), carry the copy, and
pass it as NETWORK to `scripts/device_recovery.sh`.

    python -P models/vqgan/slim_weights.py --weights models/vqgan/weights/vqgan.safetensors --keep 512,8192 \\
        --out .data/vqgan_slim.safetensors
"""

from __future__ import annotations

from pathlib import Path

import typer

from nmc.codec.weights import read_weights, write_weights

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    weights: Path = typer.Option(..., help="the assembled vqgan weights file"),
    keep: str = typer.Option("", help="rung sizes whose own decoders stay (comma-separated; none: every rung decodes with the base decoder)"),
    out: Path = typer.Option(..., help="the slim copy"),
) -> None:
    w = read_weights(weights)
    kept = {int(s) for s in keep.split(",") if s}
    own = set(w.args.get("rung_decoders", []))
    if kept - own:
        raise typer.BadParameter(f"--keep {keep}: {weights} has no own decoder for {sorted(kept - own)} (rung decoders: {sorted(own)})")
    dropped = own - kept
    state = {k: v for k, v in w.state.items() if not any(k.startswith(f"rungs.{s}.g_s.") for s in dropped)}
    args = {**w.args, "rung_decoders": sorted(kept)}
    write_weights(out, type(w)(state, args, w.prior, {"slim_of": str(weights), "dropped_decoders": sorted(dropped), "network": w.report}))
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB, rung decoders {sorted(kept)} (left out: {sorted(dropped)})")


if __name__ == "__main__":
    app()
