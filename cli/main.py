"""The `nmc` command line: argument parsing, progress and printing only; the work is in nmc.codec."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import closing
from pathlib import Path
from types import FrameType
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from nmc.cli import eval_cmds
from nmc.cli.output import FORCE_HELP, JSON_HELP, Terminated, emit, err, fatal, progress, stopped, user_errors
from nmc.codec.device import DEVICE_HELP
from nmc.codec.device import resolve as resolve_device

app = typer.Typer(
    name="nmc",
    help="Neural media codec: compress speech, photos and Gaussian scenes with learned codecs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@user_errors
def compress(
    input: str = typer.Argument(..., help="Media file (image, audio), .ply or directory of .ply frames; '-' for stdin."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output .nmc path ('-' for stdout). Default: INPUT.nmc."),
    codec: str = typer.Option("auto", "--codec", "-c", help="Codec name (see `nmc models`), or auto by media type."),
    quality: Optional[str] = typer.Option(None, "--quality", "-q", help="Rate setting name of the codec (see `nmc models`)."),
    bitrate: Optional[float] = typer.Option(None, "--bitrate", "-b", help="Highest nominal rate allowed, in the codec's unit (kbit/s for audio)."),
    target_bpp: Optional[float] = typer.Option(None, "--target-bpp", help="Images: the best setting whose real size is at most this many bits per pixel."),
    mono: bool = typer.Option(False, "--mono", help="Audio: downmix to one channel before coding (recorded in the header)."),
    packets: Optional[int] = typer.Option(None, "--packets", help="vqgan: index packets per tile (default 8), interleaved so that a lost one leaves scattered holes; more packets cost a little rate (models/vqgan/CARD.md)."),
    conceal_check: bool = typer.Option(False, "--conceal-check", help="vqgan: try `--recover` on the photo while compressing (a quarter of its packets lost, two trial decodes: a few seconds more) and write in the header which decoder conceals it better."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Compress a media file into an .nmc file."""
    from nmc.codec.api import use_device
    from nmc.codec.files import compress_path

    if sum(x is not None for x in (quality, bitrate, target_bpp)) > 1:
        fatal("give at most one of --quality, --bitrate, --target-bpp")
    use_device(resolve_device(device))
    with progress() as bar:
        task = bar.add_task("compressing", total=None)
        summary = compress_path(
            input, output, codec, quality, bitrate, target_bpp, force, lambda done, total: bar.update(task, completed=done, total=total), mono, packets, conceal_check
        )
    emit(summary.as_dict(), as_json, summary.line(), output == "-")


@app.command()
@user_errors
def decompress(
    input: str = typer.Argument(..., help="The .nmc file ('-' for stdin)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output path ('-' for stdout). Default: INPUT without .nmc, as PNG/WAV."),
    recover: bool = typer.Option(False, "--recover", help="Decode despite damaged packets where the codec can predict lost data."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", min=1000, max=768000, help="Audio: resample the decoded signal to this rate (Hz)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Decompress an .nmc file back to media."""
    from nmc.codec.api import use_device
    from nmc.codec.files import decompress_path

    use_device(resolve_device(device))
    summary = decompress_path(input, output, recover, force, sample_rate)
    if summary.recovered:
        err.print(summary.recovered, markup=False, highlight=False, soft_wrap=True)
    emit(summary.as_dict(), as_json, summary.line(), output == "-")


@app.command()
@user_errors
def info(
    file: str = typer.Argument(..., help="The .nmc file."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show the header, packet sizes, checksums and real rate of an .nmc file."""
    from nmc.codec.inspect import describe

    data = describe(Path(file))
    lines = [f"{k}: {v}" for k, v in data.items() if k != "packet_bytes"]
    lines.append(f"packet_bytes: {data['packet_bytes'][:16]}{' ...' if len(data['packet_bytes']) > 16 else ''}")
    emit(data, as_json, "\n".join(lines))


@app.command()
@user_errors
def models(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the installed codecs, their rate settings and model sizes."""
    from nmc.codec.inspect import list_models

    rows = list_models()
    table = Table("codec", "media", "model", "settings", "weights")
    for r in rows:
        table.add_row(r["codec"], r["media"], r["model_id"], ", ".join(f"{s['name']} ({s['rate']:g} {s['unit']})" for s in r["settings"]), r["weights_size"])
    if as_json:
        emit(rows, True, "")
    elif rows:
        Console().print(table)
    else:
        err.print("no codecs installed")


@app.command()
@user_errors
def batch(
    src: Path = typer.Argument(..., help="Source directory (media files are compressed, .nmc files decompressed)."),
    dst: Path = typer.Argument(..., help="Destination directory; the tree of SRC is mirrored."),
    codec: str = typer.Option("auto", "--codec", "-c", help="Codec for compression, or auto by media type."),
    quality: Optional[str] = typer.Option(None, "--quality", "-q", help="Rate setting name."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help="Parallel worker processes (Ray: actors). Default: one per CPU core, at most one per file."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " With a GPU the workers share its network, in batches."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray (Ray Data actors; pip install 'nmc\\[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray: the cluster to join (e.g. ray://head:10001 or auto); default: a local Ray instance."),
    resume: bool = typer.Option(False, "--resume", help="Skip files whose output already exists."),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Convert a whole directory tree, in parallel, with a summary at the end."""
    import os
    import time

    from nmc.codec import batch as B

    if executor not in ("local", "ray"):
        raise typer.BadParameter(f"{executor!r}: choose local or ray", param_hint="--executor")
    if address is not None and executor != "ray":
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    if not src.is_dir():
        fatal(f"{src}: not a directory")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        fatal("DST must not be SRC or inside it")
    where = resolve_device(device) if executor == "local" else device  # Ray: each actor resolves it on its node
    dst.mkdir(parents=True, exist_ok=True)
    jobs = B.plan(src, dst)
    # Every core by default on the CPU too: two workers on two cores gave 1.7-2.1x one worker (BENCHMARKS "Call 7");
    # never more workers than files (a single file is coded in this process, without a pool).
    n = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    results: list[B.Result] = []
    stop: KeyboardInterrupt | None = None
    network: dict[str, float] = {}  # the shared network's calls, batches and times (B.run)
    start = time.perf_counter()
    if executor == "ray":
        from nmc.codec import batch_ray

        stream = batch_ray.run(jobs, codec, quality, n, resume, force, device, address)
    else:
        stream = B.run(jobs, codec, quality, n, resume, force, where, stats=network)
    try:
        with progress() as bar, closing(stream):
            task = bar.add_task("batch", total=len(jobs))
            for r in stream:
                results.append(r)
                bar.advance(task)
                if r.status == "failed":
                    err.print(f"failed: {r.job.src}: {r.error}", markup=False, highlight=False, soft_wrap=True)
    except KeyboardInterrupt as e:  # the workers are stopped (closing): report what finished
        stop = e
    seconds = time.perf_counter() - start
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    counts["not_run"] = len(jobs) - len(results)
    if as_json:
        records = [{"src": str(r.job.src), "status": r.status, "error": r.error, **(r.summary.as_dict() if r.summary else {})} for r in results]
        emit({"counts": counts, "seconds": round(seconds, 3), "network": network, "files": records}, True, "")
    else:
        table = Table("file", "status", "codec", "rate", "detail")
        for r in sorted(results, key=lambda r: str(r.job.src)):
            s = r.summary
            table.add_row(str(r.job.src.relative_to(src)), r.status, s.codec if s else "", f"{s.rate:.4g} {s.unit}" if s else "", r.error)
        Console(stderr=True).print(table)
        line = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed" + (f", {counts['not_run']} not run" if counts["not_run"] else "")
        err.print(f"{line} in {seconds:.1f} s")
    if stop is not None:
        stopped(stop)
    if counts["failed"]:
        raise SystemExit(1)


eval_cmds.register(app)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`nmc`); commands are callable from tests as main([...])."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        code = app(args=argv, prog_name="nmc", standalone_mode=False)
    except TyperException as e:  # usage errors: one line like every other error
        message = e.format_message()
        if not message:  # `nmc` alone: the help is already printed
            raise SystemExit(e.exit_code) from None
        ctx = getattr(e, "ctx", None)
        fatal(f"{message} (see '{ctx.command_path if ctx else 'nmc'} --help')", e.exit_code)
    except typer.Abort:  # Ctrl-C or end of input outside the commands
        fatal("interrupted", 130)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if isinstance(code, int) and code:  # an exit status (e.g. 130: Ctrl-C while parsing)
        raise SystemExit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
