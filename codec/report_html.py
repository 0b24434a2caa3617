"""`report.html`: one page to see and hear an eval report, opened from disk, offline.

Built from `report.json` and the files `report_media` wrote beside it, so `nmc eval
--html-only DIR` rebuilds it without recomputing anything. The summary (coders, settings,
means, BD-rates, RD plots as SVG) is static HTML; each source file gets a section by media
kind (`SECTIONS`). Styles and script are inlined from `report_page/`; only media files and
plots are separate, all relative links into the report directory, and nothing is fetched from
the network. A link to a file that does not exist (a deleted `full/`) is simply not written.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from importlib.resources import files as package_files
from pathlib import Path
from string import Template
from typing import Any, Callable

from .evaluate import AT_RATES, RATE_KEY
from .metrics import METRICS
from .report_media import OPUS_KBPS, PAGE_FILES, folder_of, point_name

RATE_UNIT = {"bpp": "bpp", "kbps": "kbit/s", "mb_per_frame": "MB/frame"}
DEFAULT_BPP = 0.25  # the rate the image line-up starts at


@dataclass
class Entry:
    """One decoded version of a source file shown on the page: the original or a rate point."""

    codec: str  # "original" for the source itself
    setting: str
    record: dict[str, Any]  # the report record; {} for the original
    stem: str  # media file stem (report_media.point_name, or "original")
    anchor: bool = False

    @property
    def label(self) -> str:
        return f"{self.codec} {self.setting}".strip()


@dataclass
class FileView:
    """A source file with its media folder, its entries and the links that exist on disk."""

    path: str
    kind: str
    folder: str
    info: dict[str, Any]
    entries: list[Entry]
    out: Path

    def asset(self, entry: Entry, suffix: str) -> str | None:
        """Relative URL of a page file (crop, clip, spectrogram), None when it is missing."""
        rel = f"media/{self.folder}/{entry.stem}.{suffix}"
        return rel if (self.out / rel).exists() else None

    def full(self, entry: Entry) -> str | None:
        rel = f"full/{self.folder}/{entry.stem}.{'png' if self.kind == 'image' else 'flac'}"
        return rel if (self.out / rel).exists() else None

    @property
    def anchor_id(self) -> str:
        return "f-" + self.folder


def write_page(report: dict[str, Any], out: Path, plots: list[str]) -> Path:
    """Write `out/report.html` for a report (as in report.json); `plots` are the PNG plot names."""
    views = file_views(report, out)
    kinds = [k for k in SECTIONS if any(v.kind == k for v in views)]
    body = [_summary(report, plots, views)]
    for kind in kinds:
        body.append(SECTIONS[kind]([v for v in views if v.kind == kind]))
    assets = package_files("nmc.codec") / "report_page"
    page = Template((assets / "page.html").read_text()).substitute(
        title=html.escape("nmc eval: " + ", ".join(report["meta"]["datasets"])),
        css=(assets / "page.css").read_text(),
        js=(assets / "page.js").read_text(),
        body="\n".join(body),
    )
    target = out / "report.html"
    tmp = target.with_name("report.html.part")
    tmp.write_text(page)
    tmp.replace(target)
    return target


def file_views(report: dict[str, Any], out: Path) -> list[FileView]:
    """The source files in report order; those whose media folder is missing have no links."""
    meta = report["meta"]
    sources = meta.get("sources", {})
    views: dict[str, FileView] = {}
    for r in report["records"]:
        coder = meta["coders"][r["codec"]]
        if r["file"] not in views:
            folder = folder_of(r["file"], sources.get(r["file"], "unknown"))  # reports older than meta.sources: no media
            info_path = out / "media" / folder / "info.json"
            info = json.loads(info_path.read_text()) if info_path.exists() else {}
            views[r["file"]] = FileView(r["file"], coder["media"], folder, info, [Entry("original", "", {}, "original")], out)
        stem = point_name(r["codec"], r["setting"], coder["identity"])
        views[r["file"]].entries.append(Entry(r["codec"], r["setting"], r, stem, coder["anchor"]))
    return list(views.values())


# ---------------------------------------------------------------- formatting


def _num(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return f"{v:.4g}"
    return "–"


def _metric_keys(kind: str, rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in METRICS if METRICS[k].media == kind and any(k in r for r in rows)]


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _link(url: str | None, text: str) -> str:
    return f'<a href="{html.escape(url)}">{text}</a>' if url else ""


def _caption(kind: str, entry: Entry, metrics: list[str]) -> str:
    """Rate and metrics of a point in one line (plain text)."""
    if not entry.record:
        return "source"
    rate_key = RATE_KEY[kind]
    parts = [f"{_num(entry.record.get(rate_key))} {RATE_UNIT[rate_key]}"]
    parts += [_metric_text(m, entry.record.get(m)) for m in metrics]
    return " · ".join(parts)


def _metric_text(metric: str, value: Any) -> str:
    """'PSNR 31.2 dB', 'MS-SSIM 0.951': the unit after the number."""
    label = METRICS[metric].label
    return f"{label[:-5]} {_num(value)} dB" if label.endswith(" (dB)") else f"{label} {_num(value)}"


# ---------------------------------------------------------------- summary


def _summary(report: dict[str, Any], plots: list[str], views: list[FileView]) -> str:
    meta, e = report["meta"], html.escape
    nav = ['<a href="#summary">Summary</a>', '<a href="#plots">RD plots</a>']
    counts = {k: sum(v.kind == k for v in views) for k in SECTIONS}
    nav += [f'<a href="#{k}">{_KIND_TITLE[k]} ({n} file{"s" if n > 1 else ""})</a>' for k, n in counts.items() if n]
    parts = [
        '<header><h1>nmc eval report</h1>',
        f'<p class="meta">{e(meta["date"])} · {e(meta["machine"])}<br>Datasets: {e(", ".join(meta["datasets"]))}</p>',
        f'<nav>{" · ".join(nav)}</nav></header>',
        '<section id="summary"><h2>Codecs and anchors</h2>',
    ]
    settings: dict[str, list[str]] = {}
    for m in report["means"]:
        settings.setdefault(m["codec"], []).append(m["setting"])
    rows = [
        [f"<b>{e(name)}</b>", "anchor" if c["anchor"] else "learned", e(c["media"]), e(", ".join(settings.get(name, []))), f"<code>{e(c['identity'])}</code>"]
        for name, c in meta["coders"].items()
    ]
    parts.append(_table(["name", "kind", "media", "settings", "identity (cache key)"], rows, "coders"))
    parts.append('<h2 id="plots">Rate-distortion plots</h2><p class="help">Mean over files per setting; learned codecs solid, anchors dashed.</p><div class="plots">')
    for png in plots:
        metric = png[3:-4]  # rd_<metric>.png
        label = METRICS[metric].label if metric in METRICS else metric
        parts.append(f'<figure><img src="{e(png[:-4])}.svg" alt="{e(label)}"><figcaption>{e(label)} · <a href="{e(png)}">PNG</a></figcaption></figure>')
    parts.append("</div>")
    for kind in SECTIONS:
        means = [m for m in report["means"] if m["media"] == kind]
        if not means:
            continue
        rate_key, metrics = RATE_KEY[kind], _metric_keys(kind, means)
        header = ["codec", "setting", "files", RATE_UNIT[rate_key], *(METRICS[k].label for k in metrics), "encode s", "decode s"]
        body = [[e(m["codec"]), e(m["setting"]), str(m["files"]), *(_num(m.get(k)) for k in [rate_key, *metrics, "encode_s", "decode_s"])] for m in means]
        parts += [f"<h2>Means per rate point ({kind}, over files)</h2>", _table(header, body, "means")]
    if report["bd_rate"]:
        metrics = list(dict.fromkeys(b["metric"] for b in report["bd_rate"]))
        pairs = list(dict.fromkeys((b["codec"], b["anchor"]) for b in report["bd_rate"]))
        value = {(b["codec"], b["anchor"], b["metric"]): b["percent"] for b in report["bd_rate"]}
        body = [[e(c), e(a), *(_num(value.get((c, a, m))) for m in metrics)] for c, a in pairs]
        parts += [
            "<h2>BD-rate (%)</h2>",
            "<p>Negative: fewer bits than the anchor for the same quality, over the per-setting mean curves (MS-SSIM in dB). – : no common quality range.</p>",
            _table(["codec", "anchor", *(METRICS[m].label for m in metrics)], body, "bd"),
        ]
    parts.append("</section>")
    return "\n".join(parts)


# ---------------------------------------------------------------- images


def _image_section(views: list[FileView]) -> str:
    rates = sorted(e.record["bpp"] for v in views for e in v.entries if e.record.get("bpp"))
    ladder = [r for r in AT_RATES["image"] if rates and rates[0] / 1.5 <= r <= rates[-1] * 1.5] or [DEFAULT_BPP]
    default = min(ladder, key=lambda r: abs(math.log(r / DEFAULT_BPP)))
    options = "".join(f'<option value="{r:g}"{" selected" if r == default else ""}>{r:g} bpp</option>' for r in ladder)
    parts = [
        '<section id="image" class="kind"><h2>Images</h2>',
        '<p class="help">Each file shows a detail crop (the most detailed square of the original, lossless) of every point whose media were kept. '
        "The slider compares any two: pick A and B from the lists or with the A/B buttons under each crop. "
        f'The line-up shows each codec at the setting closest to <label><select id="target">{options}</select></label>.</p>',
    ]
    for i, view in enumerate(views):
        parts.append(_image_file(view, open_=i == 0))
    parts.append("</section>")
    return "\n".join(parts)


def _image_file(view: FileView, open_: bool) -> str:
    e, info = html.escape, view.info
    metrics = _metric_keys("image", [x.record for x in view.entries])
    shown = [x for x in view.entries if view.asset(x, PAGE_FILES["image"][0])]
    data = [
        {"label": x.label, "codec": x.codec, "rate": x.record.get("bpp"), "caption": _caption("image", x, metrics), "crop": view.asset(x, "crop.webp"), "full": view.full(x)}
        for x in shown
    ]
    size = f'{info["width"]}×{info["height"]} px' if info else "no media kept"
    summary = f'<summary><h3>{e(Path(view.path).name)}</h3> <span class="dim">{size} · {len(view.entries) - 1} points</span></summary>'
    parts = [f'<details class="file image" id="{e(view.anchor_id)}"{" open" if open_ else ""}>', summary]
    if not shown or not info:
        parts.append("<p>No decoded media in this report directory (re-run <code>nmc eval</code> on the dataset to write them).</p>")
    else:
        parts.append(f'<script type="application/json" class="entries">{_json(data)}</script>')
        thumb = view.asset(view.entries[0], "thumb.jpg")
        x, y, w, h = info["crop"]
        box = f"left:{100 * x / info['width']:.2f}%;top:{100 * y / info['height']:.2f}%;width:{100 * w / info['width']:.2f}%;height:{100 * h / info['height']:.2f}%"
        picture = f'<img src="{e(thumb)}" alt="original" loading="lazy"><span class="crop-box" style="{box}"></span>' if thumb else ""
        original_full = _link(view.full(view.entries[0]), "full size")
        parts += [
            '<div class="file-head">',
            f'<figure class="thumb"><div class="thumb-box">{picture}</div>',
            f'<figcaption>original · crop at x={x}, y={y} ({w}×{h}) {original_full}</figcaption></figure>',
            _compare_panel(),
            "</div>",
            '<h4>Line-up at the chosen rate</h4><div class="lineup"></div>',
            f"<details class=\"all\"><summary>All settings ({len(view.entries) - 1} points, {sum(1 for x in shown if x.record)} with media)</summary>",
        ]
        index = {id(x): i for i, x in enumerate(shown)}
        for codec in dict.fromkeys(x.codec for x in view.entries[1:]):
            row = [x for x in view.entries if x.codec == codec]
            figures = "".join(_crop_figure(x, index.get(id(x)), data, metrics) for x in row)
            parts.append(f'<div class="codec-row"><h5>{e(codec)}{" (anchor)" if row[0].anchor else ""}</h5><div class="crops">{figures}</div></div>')
        parts.append("</details>")
    parts.append("</details>")
    return "\n".join(parts)


def _crop_figure(entry: Entry, i: int | None, data: list[dict[str, Any]], metrics: list[str]) -> str:
    e = html.escape
    if i is None:
        return f'<figure class="crop missing"><div class="no-media">not kept</div><figcaption><b>{e(entry.setting)}</b><br>{e(_caption("image", entry, metrics))}</figcaption></figure>'
    buttons = f'<button type="button" data-pick="a" data-entry="{i}">A</button><button type="button" data-pick="b" data-entry="{i}">B</button>'
    full = _link(data[i]["full"], "full")
    return (
        f'<figure class="crop"><img src="{e(data[i]["crop"])}" alt="{e(entry.label)}" loading="lazy">'
        f'<figcaption><b>{e(entry.setting)}</b> {buttons} {full}<br>{e(data[i]["caption"])}</figcaption></figure>'
    )


def _compare_panel() -> str:
    zoom = "".join(f'<option value="{z}"{" selected" if z == 3 else ""}>{z}×</option>' for z in (1, 2, 3, 4))
    return (
        '<div class="compare">'
        '<div class="controls"><label>A <select class="pick-a"></select></label> '
        '<label>B <select class="pick-b"></select></label> '
        f'<label>zoom <select class="zoom">{zoom}</select></label> '
        '<button type="button" class="swap" title="swap A and B">A⇄B</button></div>'
        '<div class="stage"><img class="img-b" alt="B"><img class="img-a" alt="A">'
        '<div class="divider"></div><span class="tag tag-a">A</span><span class="tag tag-b">B</span>'
        '<input type="range" class="split" min="0" max="100" value="50" aria-label="slider between A and B"></div>'
        '<div class="captions"><p class="cap-a"></p><p class="cap-b"></p></div>'
        "</div>"
    )


# ---------------------------------------------------------------- audio


def _audio_section(views: list[FileView]) -> str:
    parts = [
        '<section id="audio" class="kind"><h2>Audio</h2>',
        "<p class=\"help\">Every decoded clip, playable, with its real rate, metrics and spectrogram (0 Hz at the bottom up to half the original's "
        f"sample rate, -100 to -10 dBFS). The players use Ogg Opus at {OPUS_KBPS} kbit/s per channel, near-transparent at these rates; "
        "the metrics were computed on the decoded samples before that, and <i>flac</i> links the lossless decoded file where it was kept.</p>",
    ]
    for i, view in enumerate(views):
        parts.append(_audio_file(view, open_=i == 0))
    parts.append("</section>")
    return "\n".join(parts)


def _audio_file(view: FileView, open_: bool) -> str:
    e, info = html.escape, view.info
    metrics = _metric_keys("audio", [x.record for x in view.entries])
    about = f'{info["seconds"]:.2f} s · {info["sample_rate"] / 1000:g} kHz · {info["channels"]} ch' if info else "no media kept"
    parts = [
        f'<details class="file audio" id="{e(view.anchor_id)}"{" open" if open_ else ""}>',
        f'<summary><h3>{e(Path(view.path).name)}</h3> <span class="dim">{about} · {len(view.entries) - 1} points</span></summary>',
    ]
    rows = []
    for x in view.entries:
        clip, spec = view.asset(x, "ogg"), view.asset(x, "spec.webp")
        player = f'<audio controls preload="none" src="{e(clip)}"></audio>' if clip else '<span class="dim">not kept</span>'
        image = f'<img class="spec" src="{e(spec)}" alt="spectrogram of {e(x.label)}" loading="lazy">' if spec else ""
        name = f"<b>{e(x.codec)}</b>" if x.record else "<b>original</b>"
        rate = _num(x.record.get("kbps")) if x.record else "–"
        cells = [name, e(x.setting), rate, *(_num(x.record.get(m)) for m in metrics), f"{player} {_link(view.full(x), 'flac')}", image]
        rows.append(cells)
    parts.append(_table(["codec", "setting", "kbit/s", *(METRICS[m].label for m in metrics), "listen", "spectrogram"], rows, "players"))
    parts.append("</details>")
    return "\n".join(parts)


def _json(data: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(data).replace("</", "<\\/")


# ---------------------------------------------------------------- Gaussian sequences


def _gaussians_section(views: list[FileView]) -> str:
    parts = [
        '<section id="gaussians" class="kind"><h2>Gaussian sequences</h2>',
        "<p class=\"help\">Each sequence's first frame rendered from its first quality camera, for every point whose media were kept. "
        "The metrics compare renders of every frame from every quality camera with renders of the original frames.</p>",
    ]
    for i, view in enumerate(views):
        e, info = html.escape, view.info
        metrics = _metric_keys("gaussians", [x.record for x in view.entries])
        about = f'{info["frames"]} frames · {info["gaussians"]} Gaussians · SH degree {info["sh_degree"]}' if info else "no media kept"
        parts += [f'<details class="file gaussians" id="{e(view.anchor_id)}"{" open" if i == 0 else ""}>',
                  f'<summary><h3>{e(Path(view.path).name)}</h3> <span class="dim">{about} · {len(view.entries) - 1} points</span></summary>']
        rows = []
        for x in view.entries:
            image = view.asset(x, "view.webp")
            picture = f'<img class="view" src="{e(image)}" alt="{e(x.label)}" loading="lazy">' if image else '<span class="dim">not kept</span>'
            name = f"<b>{e(x.codec)}</b>" if x.record else "<b>original</b>"
            rates = [_num(x.record.get(k)) if x.record else "–" for k in ("mb_per_frame", "bits_per_gaussian")]
            rows.append([name, e(x.setting), *rates, *(_num(x.record.get(m)) for m in metrics), picture])
        parts.append(_table(["codec", "setting", "MB/frame", "bits/Gaussian", *(METRICS[m].label for m in metrics), "first frame"], rows, "players"))
        parts.append("</details>")
    parts.append("</section>")
    return "\n".join(parts)


_KIND_TITLE = {"image": "Images", "audio": "Audio", "gaussians": "Gaussian sequences"}
# One section per media kind.
SECTIONS: dict[str, Callable[[list[FileView]], str]] = {"image": _image_section, "audio": _audio_section, "gaussians": _gaussians_section}
