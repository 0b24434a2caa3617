"""Load a local HTML page in headless Chromium and report everything that failed to load.

Drives Debian's `chromium` over the DevTools protocol on `--remote-debugging-pipe` (JSON
messages on file descriptors 3 and 4), so it needs no Python package and no network port.
`check_page` forces every lazy image and every `<audio>` to load, then lists broken images,
unplayable audio, failed requests, requests leaving the page's folder for the network,
console errors and script exceptions, and links to files that do not exist.

    python tests/browser.py PAGE.html SHOT.png   # prints the problems, saves a screenshot
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
]  # fmt: skip

# Runs in the page: load everything that loads lazily or on demand, then say what failed.
CHECK_JS = """
(async () => {
  const problems = [];
  const settle = (el, ok, bad) => new Promise((done) => {
    const timer = setTimeout(() => done("timeout"), 30000);
    el.addEventListener(ok, () => { clearTimeout(timer); done("ok"); }, { once: true });
    el.addEventListener(bad, () => { clearTimeout(timer); done("error"); }, { once: true });
  });
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const images = [...document.images];
  await Promise.all(images.map((img) => {
    img.loading = "eager";
    return img.complete ? null : settle(img, "load", "error");
  }));
  for (const img of images) {
    if (!img.getAttribute("src")) problems.push(`image without src: ${img.outerHTML.slice(0, 120)}`);
    else if (!img.complete || img.naturalWidth === 0) problems.push(`image did not load: ${img.getAttribute("src")}`);
  }
  const audios = [...document.querySelectorAll("audio, video")];
  const results = await Promise.all(audios.map((a) => {
    a.preload = "auto";
    const wait = a.readyState >= 1 ? Promise.resolve("ok") : settle(a, "loadedmetadata", "error");
    if (a.readyState < 1) a.load();
    return wait;
  }));
  audios.forEach((a, i) => {
    if (results[i] !== "ok" || a.error || !(a.duration > 0)) problems.push(`${a.tagName.toLowerCase()} did not load (${results[i]}): ${a.getAttribute("src")}`);
  });
  const links = [...document.querySelectorAll("a[href]")].map((a) => a.href);
  const external = [...document.querySelectorAll("[src], link[href]")].map((e) => e.src || e.href);
  return JSON.stringify({ problems, links, external, images: images.length, audio: audios.length });
})()
"""


# Runs in the page: wait (up to 10 s) until the images in the viewport have loaded or failed.
VISIBLE_IMAGES_JS = """
(async () => {
  const inView = (img) => { const r = img.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight && r.width > 0; };
  for (let t = 0; t < 100 && [...document.images].some((img) => inView(img) && !img.complete); t++) {
    await new Promise((done) => setTimeout(done, 100));
  }
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
})()
"""


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageCheck:
    """What `check_page` found: problems (empty when the page is whole) and element counts."""

    problems: list[str] = field(default_factory=list)
    images: int = 0
    audio: int = 0
    links: int = 0


class Chromium:
    """One headless Chromium process and one page (a flattened CDP session)."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900) -> None:
        self.profile = tempfile.mkdtemp(prefix="nmc-chromium-")
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def fds_3_and_4() -> None:  # where --remote-debugging-pipe expects them
            read_end = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        args = [executable, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=fds_3_and_4)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False, session=True)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while True:
            for e in self.events[seen:]:
                if e["method"] == event:
                    return e
            seen = len(self.events)
            reply = self._receive(deadline)
            if "method" in reply:
                self.events.append(reply)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_page(page: Path, screenshot: Path | None = None, executable: str | None = None, scroll_to: str | None = None) -> PageCheck:
    """Open `page` from disk, load all its media, and list what is broken; save a screenshot.

    Args:
        scroll_to (str): CSS selector to scroll into view before the screenshot (default: the top).
    """
    page = page.resolve()
    exe = executable or find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium executable on PATH")
    with Chromium(exe) as browser:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=True)
        browser.call("Page.navigate", session=True, url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        if screenshot is not None:  # first, as a person sees the page: only the open sections
            where = f"document.querySelector({json.dumps(scroll_to)}).scrollIntoView()" if scroll_to else "window.scrollTo(0, 0)"
            browser.call("Runtime.evaluate", session=True, expression=where)
            browser.call("Runtime.evaluate", session=True, expression=VISIBLE_IMAGES_JS, awaitPromise=True)
            shot = browser.call("Page.captureScreenshot", session=True, format="png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        found = browser.call("Runtime.evaluate", session=True, timeout=120, expression=CHECK_JS, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in found:
            raise RuntimeError(f"check script failed: {found['exceptionDetails']}")
        result = json.loads(found["result"]["value"])
        events = list(browser.events)
    check = PageCheck(list(result["problems"]), result["images"], result["audio"], len(result["links"]))
    check.problems += _event_problems(events)
    check.problems += [f"not local (the page must work offline): {u}" for u in result["external"] if not u.startswith(("file:", "data:"))]
    check.problems += _link_problems(result["links"], page)
    return check


def _event_problems(events: list[dict[str, Any]]) -> list[str]:
    problems, urls = [], {}
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[p["requestId"]] = p["request"]["url"]
            if not p["request"]["url"].startswith(("file:", "data:")):
                problems.append(f"network request: {p['request']['url']}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"request failed ({p.get('errorText')}): {urls.get(p['requestId'], '?')}")
        elif method == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            problems.append(f"script exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            problems.append(f"console {p['type']}: {' '.join(str(a.get('value', a.get('description', ''))) for a in p['args'])}")
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            problems.append(f"console error: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
    return problems


def _link_problems(links: list[str], page: Path) -> list[str]:
    problems = []
    for link in links:
        url = urlparse(link)
        if url.scheme == "file":
            target = Path(unquote(url.path))
            if not target.exists() and target != page:
                problems.append(f"broken link: {target.relative_to(page.parent) if target.is_relative_to(page.parent) else target}")
        elif url.scheme not in ("data",):
            problems.append(f"link leaves the page's folder: {link}")
    return problems


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit("usage: python tests/browser.py PAGE.html [SHOT.png [CSS-SELECTOR]]")
    shot = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    outcome = check_page(Path(sys.argv[1]), shot, scroll_to=sys.argv[3] if len(sys.argv) > 3 else None)
    print(f"{outcome.images} images, {outcome.audio} audio, {outcome.links} links; {len(outcome.problems)} problems")
    print("\n".join(outcome.problems))
    sys.exit(1 if outcome.problems else 0)
