"""A real headless Chromium for the console's pages: Debian's ``chromium`` and
``chromium-driver``, driven by Selenium (``.ci/run`` installs both when missing).

Selenium blocks; the services of a test run in the test's event loop, so every browser call
goes through :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1440,1400",
)
T = TypeVar("T")


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A fresh headless Chromium (its own profile), or a failed test saying what is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"no browser for the console's page tests: {', '.join(missing)} missing; install "
            "Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`, "
            "as .ci/run does)",
            pytrace=False,
        )
    profile = tempfile.mkdtemp(prefix="desk-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    except WebDriverException as error:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"Chromium did not start: {error.msg}", pytrace=False)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def run(call: Callable[..., T], *args: Any) -> T:
    """A browser call, off the event loop."""
    return await asyncio.to_thread(call, *args)


async def until(
    driver: WebDriver, script: str, *, timeout: float = 15.0, what: str = "the page"
) -> Any:
    """Run ``script`` (``return …``) in the page until it returns something truthy."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await run(driver.execute_script, script)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not true after {timeout}s ({script}); last {value!r}")
