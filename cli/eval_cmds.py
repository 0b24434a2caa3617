"""`nmc eval` and `nmc bench`: parse, call nmc.codec.evaluate / nmc.codec.bench, print."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer

from nmc.cli.output import emit, err, progress, user_errors
from nmc.codec.device import DEVICE_HELP

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _names(text: Optional[str]) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()] if text else []


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "–"
    return "–" if v is None else str(v)


def eval_command(
    datasets: Optional[list[Path]] = typer.Argument(None, help="Image/audio files, .ply sequence directories, or directories holding them (searched recursively)."),
    codec: Optional[str] = typer.Option(None, "--codec", "-c", help="Learned codecs, comma-separated (see `nmc models`)."),
    anchors: Optional[str] = typer.Option(None, "--anchors", "-a", help="Classical anchors: jpeg,webp,avif,jpeg2000,jxl,hevc,vvc,opus,codec2 / ply,spz,quant (Gaussian sequences)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", "-m", help="Metrics to compute (default per media: psnr,ms_ssim,st_lpips / pesq,stoi,visqol_speech,si_sdr,mel_distance / view_psnr,view_ssim,view_st_lpips)."),
    report: Path = typer.Option(Path("reports/eval"), "--report", "-r", help="Report directory (also holds the resume cache)."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads for codecs and metrics (per worker)."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Files evaluated in parallel processes, on the CPU those of --loss too (0: one per CPU core)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " Also for the ST-LPIPS and MS-SSIM networks."),
    media_at: Optional[str] = typer.Option(None, "--media-at", help="Keep decoded media for report.html only at each codec's setting closest to these rates (bpp, kbit/s or MB/frame), e.g. 0.1,0.25,0.5. Default: every setting."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Packet loss rates to simulate for codecs that can recover, e.g. 0.05,0.1,0.2,0.3 (independent and burst drops; quality with each concealment)."),
    loss_settings: Optional[str] = typer.Option(None, "--loss-settings", help="Settings to simulate losses at, comma-separated (default: each codec's default setting)."),
    loss_draws: int = typer.Option(4, "--loss-draws", min=1, help="Seeded loss patterns per file, channel and rate."),
    loss_seed: int = typer.Option(0, "--loss-seed", help="Seed the loss patterns derive from (recorded in the report)."),
    conceal_check: bool = typer.Option(False, "--conceal-check", help="With --loss: compress the files that lose packets as `nmc compress --conceal-check` does (vqgan: the encoder chooses how --recover conceals each photo)."),
    html_only: Optional[Path] = typer.Option(None, "--html-only", help="Only rebuild DIR/report.html (and plots) from an existing report; nothing is recomputed."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json on stdout."),
) -> None:
    """Rate and quality of codecs and anchors on a dataset: tables, RD plots, BD-rate, report.html."""
    from nmc.codec import evaluate
    from nmc.codec.device import resolve
    from nmc.codec.metrics import METRICS

    if html_only is not None:
        if datasets or codec or anchors or metrics or media_at:
            raise typer.BadParameter("--html-only DIR takes no DATASET, --codec, --anchors, --metrics or --media-at", param_hint="--html-only")
        page = evaluate.rebuild_page(html_only)
        err.print(f"report: {page}", markup=False, highlight=False)
        return
    if not datasets:
        raise typer.BadParameter("give one or more image/audio files, .ply sequences or directories", param_hint="DATASET")
    try:
        rates = [float(r) for r in _names(media_at)] if media_at is not None else None
    except ValueError:
        rates = []
    if rates is not None and (not rates or not all(math.isfinite(r) and r > 0 for r in rates)):
        raise typer.BadParameter(f"expected positive rates like 0.1,0.25,0.5, got {media_at!r}", param_hint="--media-at")
    try:
        loss_rates = [float(r) for r in _names(loss)] if loss is not None else None
    except ValueError:
        loss_rates = []
    if loss_rates is not None and (not loss_rates or not all(0 < r < 1 for r in loss_rates)):
        raise typer.BadParameter(f"expected loss rates in (0, 1) like 0.05,0.1,0.2, got {loss!r}", param_hint="--loss")
    if conceal_check and not loss_rates:
        raise typer.BadParameter("--conceal-check applies to the files of --loss", param_hint="--conceal-check")
    chosen = _names(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown:
        raise typer.BadParameter(f"unknown metric(s) {unknown} (choose from {', '.join(METRICS)})", param_hint="--metrics")
    per_kind = {kind: [m for m in chosen if METRICS[m].media == kind] for kind in evaluate.KINDS}
    with progress(eta=True) as bar:
        task = bar.add_task("eval", total=None)
        result = evaluate.run(
            list(datasets), _names(codec), _names(anchors), report, {k: v for k, v in per_kind.items() if v},
            progress=lambda done, total, label: bar.update(task, completed=done, total=total, description=label[:48]), threads=threads, media_at=rates,
            device=resolve(device), workers=workers or os.cpu_count() or 1,
            loss=loss_rates, loss_settings=_names(loss_settings), loss_draws=loss_draws, loss_seed=loss_seed,
            conceal_check=conceal_check,
        )  # fmt: skip
    if as_json:
        print((report / "report.json").read_text())
        return
    from rich.table import Table

    for kind in evaluate.KINDS:
        rows = [m for m in result["means"] if m["media"] == kind]
        if rows:
            cols = [k for k in rows[0] if k not in ("codec", "setting", "media", "files", "bytes", "encode_s", "decode_s")]
            table = Table("codec", "setting", *cols, title=f"{kind}: means over {rows[0]['files']} file(s)")
            for m in rows:
                table.add_row(m["codec"], m["setting"], *(_fmt(m[c]) for c in cols))
            err.print(table)
    if result.get("loss"):
        names = result["loss"]["metrics"]
        table = Table("codec", "setting", "channel", "loss", "concealment", "lost", *names, title="packet loss: means over files and draws")
        for m in result["loss"]["means"]:
            table.add_row(m["codec"], m["setting"], m["channel"], _fmt(m["loss"]), m["concealment"], _fmt(m["lost_share"]), *(_fmt(m[c]) for c in names))
        err.print(table)
    if result["bd_rate"]:
        table = Table("codec", "anchor", "metric", "BD-rate %", title="BD-rate (negative = fewer bits)")
        for b in result["bd_rate"]:
            table.add_row(b["codec"], b["anchor"], b["metric"], _fmt(b["percent"]))
        err.print(table)
    err.print(f"report: {report / 'report.md'}, {report / 'report.html'}", markup=False, highlight=False)


def bench_command(
    inputs: Optional[list[Path]] = typer.Argument(None, help="Media files to code (default: the repository's samples/, else a synthetic photo and speech clip)."),
    codec: Optional[str] = typer.Option(None, "--codec", "-c", help="Learned codecs, comma-separated (default: all installed)."),
    anchors: Optional[str] = typer.Option(None, "--anchors", "-a", help="Classical anchors to bench as well."),
    setting: Optional[str] = typer.Option(None, "--setting", "-s", help="Rate points as name=setting pairs, e.g. jpeg=q50 (default: middle)."),
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU thread counts, e.g. 1,2 (default: 1 and all)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N, comma-separated (default: cpu, plus cuda when present)."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Timed runs per measurement (median)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON on stdout."),
) -> None:
    """Encode/decode speed, peak memory, model size and entropy-coder overhead."""
    from nmc.codec import bench
    from nmc.codec.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES, media_kind
    from nmc.codec.registry import available

    pairs = [p.split("=", 1) for p in _names(setting)]
    if any(len(p) != 2 for p in pairs):
        raise typer.BadParameter("use name=setting pairs, e.g. jpeg=q50", param_hint="--setting")
    with tempfile.TemporaryDirectory() as tmp:
        files = list(inputs or [])
        if not files and SAMPLES.is_dir():
            files = [f for f in sorted(SAMPLES.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES | AUDIO_SUFFIXES]
        elif not files:  # an installed package: no samples/ beside it
            err.print("no samples/ here: benching a synthetic photo and speech clip", markup=False, highlight=False)
            files = bench.synthetic_inputs(Path(tmp))
        kinds = {media_kind(f) for f in files}  # by default every codec that has an input here
        codecs = _names(codec) if codec else ([] if anchors else [n for n, c in available().items() if c.media in kinds and c.installed()])
        with progress(eta=True) as bar:
            task = bar.add_task("bench", total=None)
            rows = bench.run(
                files, codecs, _names(anchors), dict(pairs), [int(t) for t in _names(threads)] or None, _names(device) or None, repeat,
                progress=lambda label: bar.update(task, description=label),
            )  # fmt: skip
    if as_json:
        emit([r.as_dict() for r in rows], True, "")  # NaN (no coder overhead for anchors, say) as null
        return
    from rich.table import Table

    units = " / ".join(sorted({r.speed_unit for r in rows}))
    table = Table("codec", "setting", "dev", "thr", "encode", "decode", "RSS MB", "py MB", "params", "bytes", "coder +%", title=f"speed in {units}")
    for r in rows:
        table.add_row(
            r.codec, r.setting, r.device, _fmt(r.threads), f"{r.encode_speed:.3g}", f"{r.decode_speed:.3g}",
            _fmt(r.peak_rss_mb), _fmt(r.peak_python_mb), _fmt(r.parameters), str(r.file_bytes), _fmt(r.coder_overhead_pct),
        )  # fmt: skip
    err.print(table)


def register(app: typer.Typer) -> None:
    """Add `eval` and `bench` to the main app (called by nmc.cli.main while it loads)."""
    app.command("eval")(user_errors(eval_command))
    app.command("bench")(user_errors(bench_command))
