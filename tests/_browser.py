"""A small headless-Chromium driver over the DevTools protocol (no Selenium, no Playwright).

`Browser` starts Debian's `chromium` with a fresh profile and the flags this offline machine needs, and opens one
page target. `visit(url)` loads a page, waits for the load event and for MathJax to finish typesetting, and
returns what the page check needs: broken images, error outputs of notebook cells, internal links, whether the
math was rendered, a full-page PNG screenshot, and every request that left the local server.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--remote-debugging-port=0", "--remote-allow-origins=*",
         "--window-size=1280,900"]

# Runs in the page after load. Error outputs: myst-nb renders a cell's exception as a `traceback` output.
PAGE_REPORT = """(() => {
  const imgs = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);
  const errors = [...document.querySelectorAll('.output.traceback, .output.error, .cell_output .stderr')]
      .map(e => e.innerText.slice(0, 300));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const math = document.querySelectorAll('.math, span.math, div.math').length;
  const rendered = document.querySelectorAll('mjx-container').length;
  const raw = [...document.querySelectorAll('.math')].filter(e => /\\\\\\(|\\\\\\[|\\$\\$/.test(e.innerText)).length;
  return {broken_images: imgs, errors, links, math, rendered, raw_math: raw,
          height: document.documentElement.scrollHeight,
          title: document.title};
})()"""


def chromium_binary() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


class Browser:
    def __init__(self, binary: str, timeout: float = 30.0):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.time() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"javascript failed: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res["result"].get("value")

    def visit(self, url: str, screenshot: Path | None = None) -> dict:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        # MathJax 3 typesets after load; wait for its startup promise when the page has it
        self.evaluate("(window.MathJax && MathJax.startup && MathJax.startup.promise) || true")
        report = self.evaluate(PAGE_REPORT)
        report["requests"] = [e["params"]["request"]["url"] for e in self.events
                              if e.get("method") == "Network.requestWillBeSent"]
        if screenshot is not None:
            h = min(int(report["height"]), 16000)
            self.call("Emulation.setDeviceMetricsOverride", width=1280, height=h, deviceScaleFactor=1, mobile=False)
            png = self.call("Page.captureScreenshot", format="png")["data"]
            screenshot.write_bytes(base64.b64decode(png))
            self.call("Emulation.clearDeviceMetricsOverride")
        return report

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)
