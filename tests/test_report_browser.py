"""The HTML reports in a real headless browser (Debian's chromium through chromedriver): each page loads with no
console errors, every image decodes, and a caption holding markup shows as text and runs nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import cli
from tests.conftest import jpeg, write_shard

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> a grey cat'
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
    pytest.skip("Debian chromium + chromium-driver not installed (make test installs them)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="curate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)



def test_run_and_stage_reports_render_in_chromium(tmp_path, server, photos, browser):
    cat = photos[0][1]
    urls = [server.put(f"copy{q}.jpg", jpeg(cat, quality=q)) for q in (95, 80, 65)]
    urls += [server.put(f"{name}.jpg", jpeg(im)) for name, im, _ in photos[1:9]]
    captions = [HOSTILE] * 3 + [c for _, _, c in photos[1:9]]
    write_shard(tmp_path / "in" / "00000.parquet", [{"url": u, "caption": c} for u, c in zip(urls, captions, strict=True)])
    config = tmp_path / "p.yaml"
    config.write_text(f"""
name: browser
root: {tmp_path / 'run'}
stages:
  - download: {{inputs: {tmp_path / 'in'}, output: images, allow_private_network: true, timeout: 5}}
  - embed: {{images: images, output: emb}}
  - dedup: {{embeddings: emb, output: dedup, images: images}}
  - recaption: {{dedup: dedup, output: recaption}}
""")
    result = CliRunner().invoke(cli, ["run", str(config)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "run"
    pages = [root / "report.html", root / "dedup" / "report.html", root / "recaption" / "report.html"]
    for page in pages:
        browser.get(page.as_uri())
        assert browser.title, page
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], (page, errors)
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert all(c and w > 0 and h > 0 for c, w, h in images), (page, images)
        if page.parent.name != "recaption":  # the run page has its row chart, dedup its plots and thumbnails
            assert images, page
        assert browser.execute_script("return document.scripts.length") == 0
        assert browser.execute_script("return window.__pwned === undefined")
        text = browser.execute_script("return document.body.innerText")
        assert HOSTILE in text, page  # shown as text, not parsed as markup
    browser.get(pages[0].as_uri())
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    assert {"dedup/report.html", "recaption/report.html"} <= set(links)
    assert all(not Path(href).is_absolute() and (root / href).exists() for href in links)
