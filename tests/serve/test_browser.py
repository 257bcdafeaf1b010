"""The page in a real browser: headless Chromium (Debian's chromium + chromium-driver, through Selenium) against
`hikari serve` in a subprocess. It uploads a synthetic lesion, runs two caption models side by side, and checks
that the page shows exactly what the API answers for the same picture — then that a broken file is explained.

Skipped when Chromium is absent, unless HIKARI_REQUIRE_BROWSER=1 (set by .ci/run, which installs it): then a
missing browser fails the test instead of hiding it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from hikari.serve.process import ServerProcess

from .conftest import ROOT


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serve_screenshot", ROOT / "scripts/serve_screenshot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


page = load_script()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if page.chromium_paths() is None:
        if os.environ.get("HIKARI_REQUIRE_BROWSER") == "1":
            pytest.fail("HIKARI_REQUIRE_BROWSER=1 but chromium/chromedriver are missing "
                        "(apt-get install chromium chromium-driver)")  # fmt: skip
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    driver = page.start_chromium()
    yield driver
    driver.quit()


def test_the_page_shows_group_diagnosis_references_and_both_captions(
    browser: object, server: ServerProcess, lesion_path: Path, tmp_path: Path
) -> None:
    shown = page.walk_through(browser, server.url + "/", lesion_path, compare=True)
    page.save_screenshot(browser, tmp_path / "page.png")
    assert (tmp_path / "page.png").stat().st_size > 20_000

    info = httpx.get(f"{server.url}/v1/info").json()
    api = httpx.post(f"{server.url}/v1/cascade", timeout=300,
                     files={"image": (lesion_path.name, lesion_path.read_bytes(), "image/png")},
                     data={"text": "", "k": str(info["k_default"]), "stage3": "vega,antares"}).json()  # fmt: skip

    assert "not a medical device" in shown.banner
    assert shown.status.startswith("Done in"), shown.status
    assert shown.group == api["group"]["label"] and shown.diagnosis == api["diagnosis"]["label"]
    assert shown.bars == [(t["disease"], f"{100 * t['probability']:.1f}%") for t in api["diagnosis"]["top"]]
    assert len(shown.references) == info["k_default"] == 3
    assert shown.references == [(r["disease"], f"similarity {r['score']:.3f}") for r in api["references"]]
    assert shown.thumbnails_loaded == 3  # the browser fetched and decoded each reference's thumbnail
    assert list(shown.captions) == ["vega", "antares"]
    assert shown.captions == {name: text or "(empty caption)" for name, text in api["captions"].items()}
    assert any(text.strip() for text in shown.captions.values())
    assert shown.console_errors == []


def test_with_an_api_key_the_page_asks_for_it_and_then_shows_everything(
    browser: object, tiny_model_dir: Path, served_runs: dict[str, Path], rag_index_dir: Path, lesion_path: Path,
    tmp_path: Path
) -> None:
    """Behind --api-key the page opens its options at the key field, says why, and once the key is typed the
    cascade runs and the reference thumbnails (API calls too) load."""
    from selenium.webdriver.common.by import By

    from .conftest import ONE_THREAD, served_args

    with ServerProcess([*served_args(tiny_model_dir, served_runs, rag_index_dir), "--api-key", "s3cret"],
                       log=tmp_path / "server.log", env=ONE_THREAD, cwd=ROOT) as server:  # fmt: skip
        browser.get(server.url + "/")  # type: ignore[attr-defined]
        status = browser.find_element(By.ID, "status")  # type: ignore[attr-defined]
        page.WebDriverWait(browser, 30).until(lambda d: "needs an API key" in status.text)
        key = browser.find_element(By.ID, "key")  # type: ignore[attr-defined]
        assert key.is_displayed()
        key.send_keys("s3cret")
        shown = page.walk_through(browser, server.url + "/", lesion_path, compare=False, reload=False)
    assert shown.status.startswith("Done in"), shown.status
    assert shown.thumbnails_loaded == len(shown.references) == 3
    assert shown.console_errors == []


def test_a_broken_picture_is_explained_on_the_page(
    browser: object, server: ServerProcess, lesion_png: bytes, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(lesion_png[: len(lesion_png) // 2])
    shown = page.walk_through(browser, server.url + "/", broken, compare=False)
    assert "broken.png" in shown.status and "cannot decode" in shown.status, shown.status
    assert shown.captions == {}
