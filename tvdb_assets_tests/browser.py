"""Headless Chromium driven over the DevTools protocol, through a pipe: open a page, wait
for text, click what a user would click, save a screenshot. No browser driver package; the
protocol is JSON messages separated by NUL bytes on the file descriptors 3 and 4."""

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Screenshots of what the tests saw, kept after the run.
SCREENSHOTS = Path(
    os.environ.get("TVDB_TEST_ARTIFACTS", Path(__file__).parents[1] / ".test-artifacts")
)


def _as_fds_3_and_4(commands: int, replies: int) -> None:
    # Moved out of the way first: either may itself be descriptor 3 or 4.
    commands, replies = os.dup(commands), os.dup(replies)
    os.dup2(commands, 3)
    os.dup2(replies, 4)


class Browser:
    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None, "needs Debian's chromium (make test installs it)"
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child sees our pipe ends as its descriptors 3 (commands) and 4 (replies).
        self._process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1440,1000",
                f"--user-data-dir={profile}",
            ],  # fmt: skip
            pass_fds=(3, 4),
            preexec_fn=lambda: _as_fds_3_and_4(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self._call("Page.enable", session=True)
        self._call("Emulation.setDeviceMetricsOverride", session=True,
                   width=1440, height=1000, deviceScaleFactor=1, mobile=False)  # fmt: skip

    def open(self, url: str) -> None:
        self._call("Page.navigate", session=True, url=url)

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_for(self, *texts: str, seconds: float = 60) -> str:
        """The page's text once it shows every one of `texts` (the UI loads in steps)."""
        deadline = time.monotonic() + seconds
        while True:
            shown = self.text()
            if all(t in shown for t in texts):
                return shown
            if time.monotonic() > deadline:
                missing = [t for t in texts if t not in shown]
                raise AssertionError(f"the page never showed {missing}; it shows:\n{shown}")
            time.sleep(0.5)

    def click(self, text: str, nth: int = 0) -> None:
        """Click the `nth` (from the end when negative) button, link or tab whose text is
        exactly `text`."""
        found = self.evaluate(
            f"""(() => {{
                const all = [...document.querySelectorAll("button, a, [role=tab]")]
                  .filter(e => e.innerText.trim() === {json.dumps(text)});
                const el = all.at({nth});
                if (el) el.click();
                return !!el;
            }})()"""
        )
        assert found, f"nothing to click named {text!r}"

    def click_text(self, text: str) -> None:
        """Click the innermost element whose text contains `text` (list rows, say)."""
        assert self._innermost(text, "el.click()"), f"nothing shows {text!r}"

    def show(self, text: str) -> None:
        """Scroll the innermost element whose text contains `text` into the middle."""
        assert self._innermost(text, "el.scrollIntoView({block: 'center'})"), text

    def _innermost(self, text: str, action: str) -> bool:
        return bool(
            self.evaluate(
                f"""(() => {{
                    const el = [...document.querySelectorAll("body *")]
                      .find(e => e.children.length === 0 && e.innerText
                                 && e.innerText.includes({json.dumps(text)}));
                    if (el) {action};
                    return !!el;
                }})()"""
            )
        )

    def screenshot(self, path: Path) -> None:
        data = self._call("Page.captureScreenshot", session=True, format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def evaluate(self, expression: str) -> Any:
        reply = self._call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        return reply["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(OSError, AssertionError):  # already gone
            self._call("Browser.close")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # events arrive between replies; only our reply matters here
            reply = self._read()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return dict(reply.get("result", {}))

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 16)
            assert chunk, "chromium exited"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))
