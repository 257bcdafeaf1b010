"""Drive HIKARI's page in headless Chromium and save a screenshot: the README's docs/serve.png comes from here.

    python scripts/serve_screenshot.py                      # starts `hikari serve --demo`, writes docs/serve.png
    python scripts/serve_screenshot.py --url http://127.0.0.1:8000 --image my.png --out /tmp/page.png

It uses Debian's `chromium` and `chromium-driver` (apt-get install chromium chromium-driver) through Selenium;
HIKARI_CHROMIUM / HIKARI_CHROMEDRIVER point elsewhere. tests/serve/test_browser.py runs the same walk-through
(`walk_through`) against a server it starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from hikari.data.split import load_split
from hikari.serve.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1280, 1700)


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, or None when either is missing."""
    browser = os.environ.get("HIKARI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("HIKARI_CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium() -> WebDriver:
    paths = chromium_paths()
    if paths is None:
        raise RuntimeError("chromium and chromedriver not found: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, read in walk_through
    return webdriver.Chrome(service=Service(paths[1]), options=options)


@dataclass
class PageResult:
    """What the page showed after the cascade ran."""

    banner: str
    group: str
    diagnosis: str
    bars: list[tuple[str, str]]  # (disease, "12.3%") as drawn
    references: list[tuple[str, str]]  # (disease, "similarity 0.812") per gallery figure
    thumbnails_loaded: int  # gallery images the browser decoded
    captions: dict[str, str]  # Stage 3 model → caption text
    status: str
    console_errors: list[str]


def walk_through(driver: WebDriver, url: str, image: Path, *, compare: bool = True, text: str = "",
                 timeout: float = 120, reload: bool = True) -> PageResult:  # fmt: skip
    """Open the page (`reload`: or use the one open), choose `image`, (optionally) tick side-by-side, press
    Analyse, wait for the captions."""
    if reload:
        driver.get(url)
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_element(By.ID, "stage3a").find_elements(By.TAG_NAME, "option"))
    driver.find_element(By.ID, "file").send_keys(str(image.resolve()))
    wait.until(lambda d: d.find_element(By.ID, "run").is_enabled())
    if (compare or text) and not driver.execute_script("return document.querySelector('#input details').open"):
        driver.find_element(By.CSS_SELECTOR, "#input details summary").click()
    if text:
        driver.find_element(By.ID, "text").send_keys(text)
    if compare:
        driver.find_element(By.ID, "compare").click()
    driver.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#captions .caption")
               or d.find_element(By.ID, "status").get_attribute("class") == "error")  # fmt: skip
    wait.until(lambda d: d.execute_script(  # every thumbnail fetched and decoded, or marked missing
        "return [...document.querySelectorAll('#references img')].every(i => (i.src && i.complete"
        " && i.naturalWidth > 0) || i.classList.contains('missing'))"))

    def texts(selector: str) -> list[str]:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]

    loaded = driver.execute_script(
        "return [...document.querySelectorAll('#references img')].filter(i => i.naturalWidth > 0).length")
    logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
    return PageResult(
        banner=driver.find_element(By.ID, "banner").text,
        group=driver.find_element(By.ID, "group").text,
        diagnosis=driver.find_element(By.ID, "diagnosis").text,
        bars=list(zip(texts("#probabilities .name"), texts("#probabilities .value"), strict=True)),
        references=list(zip(texts("#references .label"), texts("#references .score"), strict=True)),
        thumbnails_loaded=int(loaded),
        captions={e.get_attribute("data-model"): e.find_element(By.TAG_NAME, "p").get_attribute("textContent")
                  for e in driver.find_elements(By.CSS_SELECTOR, "#captions .caption")},  # fmt: skip
        status=driver.find_element(By.ID, "status").text,
        console_errors=[entry["message"] for entry in logs if entry.get("level") == "SEVERE"],
    )


def save_screenshot(driver: WebDriver, out: Path) -> None:
    """The whole page (the window grown to its height), written atomically."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WINDOW[0], max(WINDOW[1], int(height) + 40))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.png")
    driver.save_screenshot(str(partial))
    partial.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server; default: start `hikari serve --demo`")
    parser.add_argument("--demo-dir", type=Path, default=ROOT / "runs/demo")
    parser.add_argument("--image", type=Path, help="default: the first validation picture of the demo's split (a case "
                        "the reference index does not hold)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/serve.png")
    args = parser.parse_args()
    image = args.image or args.demo_dir / "data/skincap" / load_split(args.demo_dir / "split.json").parts["val"][0]
    server = None
    url = args.url
    if url is None:
        try:
            server = ServerProcess(["--demo", "--demo-dir", str(args.demo_dir)], cwd=ROOT)
        except RuntimeError as err:
            sys.exit(f"hikari serve --demo did not start ({err}); run `make demo` first")
        url = server.url
    driver = start_chromium()
    try:
        result = walk_through(driver, url, image, text="")
        save_screenshot(driver, args.out)
    finally:
        driver.quit()
        if server is not None:
            server.stop()
    print(f"{args.out}: {result.group} → {result.diagnosis}; {len(result.references)} references; "
          f"captions from {', '.join(result.captions)}")


if __name__ == "__main__":
    main()
