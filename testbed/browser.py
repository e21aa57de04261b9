"""Headless Chromium driven through selenium (Debian's ``chromium`` and
``chromium-driver``; ``make test`` installs them), for the dashboard's browser tests,
its screenshots and ``bench dashboard``. Nothing is downloaded: the driver and browser
are the system's."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = "/usr/bin/chromedriver"


def screenshot_dir() -> Path:
    """Where the tests' screenshots go: ``$SCREENSHOT_DIR`` (``make screenshots`` sets it
    to docs/images), else a directory under the system's temp dir, so a test run leaves
    the tree as it was."""
    return Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "ct-screenshots")


def missing() -> str | None:
    """None when a headless browser can be driven here, else why not."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make test installs it)"
    if not any(Path(p).exists() for p in CHROMIUM):
        return "chromium is not installed (apt-get install chromium)"
    if not Path(DRIVER).exists():
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


class Browser:
    """One headless Chromium window of ``width`` x ``height``."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        self.profile = tempfile.mkdtemp(prefix="ct-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = next(p for p in CHROMIUM if Path(p).exists())
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                    "--force-device-scale-factor=1"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(options=options, service=Service(DRIVER))
        self.driver.set_page_load_timeout(30)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def get(self, url: str) -> None:
        self.driver.get(url)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str):
        found = self.css(selector)
        if not found:
            raise AssertionError(f"no element matches {selector!r} on {self.driver.current_url}")
        return found[0]

    def login(self, base: str, token: str) -> None:
        self.get(f"{base}/ui/login")
        self.one("#token").send_keys(token)
        self.one("#login-form button[type=submit]").click()
        self.wait(lambda: "/login" not in self.driver.current_url, 10, "the login to go through")

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = predicate()
            except Exception:          # an element replaced by a live update meanwhile
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole page, not just the window)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if full_page:
            size = self.driver.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": max(size[0], 1280), "height": min(size[1], 6000),
                "deviceScaleFactor": 1, "mobile": False})
            try:
                self.driver.save_screenshot(str(path))
            finally:
                self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        else:
            self.driver.save_screenshot(str(path))
        return path

    def timing(self) -> dict[str, float]:
        """The last navigation's timings (ms from its start)."""
        return self.driver.execute_script(
            "var t = performance.getEntriesByType('navigation')[0];"
            "return {response: t.responseEnd, dom: t.domContentLoadedEventEnd,"
            " load: t.loadEventEnd, bytes: t.transferSize, body: t.decodedBodySize};")
