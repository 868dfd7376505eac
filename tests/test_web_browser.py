"""The web demo end to end in a real headless browser (Debian chromium + chromedriver, driven by selenium).

Needs ``apt-get install -y chromium chromium-driver``; skips with the reason when chromium, chromedriver or selenium
is missing. Saves a screenshot to ``tmp_path`` and to ``outputs/test_artifacts/web_demo.png``.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from triplanenet.web.app import create_app

REPO = Path(__file__).resolve().parents[1]
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,900",
)


def _find(name: str, fallback: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return fallback if Path(fallback).is_file() else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    port = _free_port()
    config = uvicorn.Config(create_app(fit_steps=5, examples=1), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the demo server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    chromium = _find("chromium", "/usr/bin/chromium")
    driver_path = _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("headless browser test needs Debian chromium: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for or download a driver
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, timeout: float = 60.0):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except Exception:
        status = driver.find_element("id", "status").text
        raise AssertionError(f"timed out waiting for {what} (status line: {status!r})") from None


def _image_ready(driver, element_id: str) -> bool:
    script = "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0 && !!i.src;"
    return bool(driver.execute_script(script, element_id))


def _screenshot(driver, tmp_path: Path) -> Path:
    path = tmp_path / "web_demo.png"
    driver.save_screenshot(str(path))
    artefacts = REPO / "outputs" / "test_artifacts"
    try:
        artefacts.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, artefacts / "web_demo.png")
    except OSError:
        pass
    return path


def test_upload_reconstruct_turn_and_edit_in_a_real_browser(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(server + "/")
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle", "the page")
    assert driver.find_elements(By.CSS_SELECTOR, "#examples img.thumb"), "no example offered"
    assert len(driver.find_elements(By.CSS_SELECTOR, "#direction option")) >= 1

    # Upload the shipped example as a file, like a user would.
    photo = tmp_path / "example.png"
    photo.write_bytes(urllib.request.urlopen(server + "/api/examples/head0.png", timeout=30).read())
    driver.find_element(By.ID, "photo").send_keys(str(photo))
    body = driver.find_element(By.TAG_NAME, "body")
    _wait(driver, lambda d: body.get_attribute("data-state") == "ready", "the reconstruction")
    assert _image_ready(driver, "recon") and _image_ready(driver, "view")
    assert "aligned crop" in driver.find_element(By.ID, "status").text
    first_view = driver.find_element(By.ID, "view").get_attribute("src")
    assert "yaw=0.00" in first_view

    # Drag the yaw slider (keyboard steps of 0.05 rad) and wait for the new view.
    slider = driver.find_element(By.ID, "yaw")
    slider.click()
    slider.send_keys(Keys.HOME)
    for _ in range(4):
        slider.send_keys(Keys.ARROW_RIGHT)
    view = driver.find_element(By.ID, "view")
    _wait(driver, lambda d: view.get_attribute("data-yaw") == "-0.60" and view.get_attribute("data-state") == "ready",
          "the novel view")  # fmt: skip
    new_view = view.get_attribute("src")
    assert new_view != first_view and _image_ready(driver, "view")
    before = urllib.request.urlopen(first_view, timeout=30).read()
    after = urllib.request.urlopen(new_view, timeout=30).read()
    assert before != after, "the novel view did not change"

    # Apply an edit.
    strength = driver.find_element(By.ID, "strength")
    strength.click()
    strength.send_keys(Keys.END)
    driver.find_element(By.ID, "apply").click()
    _wait(driver, lambda d: "edited along" in d.find_element(By.ID, "status").text, "the edit")
    _wait(driver, lambda d: body.get_attribute("data-state") == "ready" and _image_ready(d, "recon"), "edited render")
    assert driver.find_element(By.ID, "mesh").get_attribute("aria-disabled") == "false"
    shot = _screenshot(driver, tmp_path)
    assert shot.stat().st_size > 10_000

    # The shipped example can also be picked directly.
    driver.find_element(By.CSS_SELECTOR, "#examples img.thumb").click()
    _wait(driver, lambda d: "example" in d.find_element(By.ID, "status").text, "the example inversion")
    assert _image_ready(driver, "recon")
