"""report.html: written by `eval`, its ablation and `predict --data`; self-contained (no URL
outside the page), one row per prediction with its images, escaped text, highlighted cue words;
and opened in headless Chromium, through its command line and driven by Selenium (Debian's
chromium-driver): one row per clip, a row click opens its completion, filters hide the right rows,
sorting, no console message, no network request, a screenshot."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from _eval_fixtures import SYNTH_LABELS, media_load_batch, synth_eval  # noqa: F401
from r1omni_fast.labels import resolve
from r1omni_fast.model import GenerationOutput
from tests._model_fixtures import tiny_ckpt, tiny_model  # noqa: F401  (fixtures)

LABELS = resolve(list(SYNTH_LABELS))


class _Page(HTMLParser):
    """Collects the prediction rows (their data-* attributes and text), every URL-bearing
    attribute and the inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows, self.urls, self.images, self.scripts, self.marks = [], [], [], [], []
        self._row = None
        self._in_script = False
        self._mark = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            if key in a:
                self.urls.append(a[key])
        if tag == "img":
            self.images.append(a)
        if tag == "tr" and "data-index" in a:
            self._row = dict(a, text="")
            self.rows.append(self._row)
        if tag == "script":
            self._in_script = True
            if "src" in a:
                self.urls.append(a["src"])
        if tag == "link":
            self.urls.append(a.get("href", ""))
        if tag == "mark":
            self._mark = [a.get("class"), ""]
            self.marks.append(self._mark)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag == "script":
            self._in_script = False
        if tag == "mark":
            self._mark = None

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)
        elif self._row is not None:
            self._row["text"] += data
        if self._mark is not None:
            self._mark[1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _assert_self_contained(page: _Page) -> None:
    assert page.urls, "no images at all"
    for url in page.urls:
        assert url.startswith("data:image/") or url.startswith("#"), url[:80]
    for script in page.scripts:
        assert "http:" not in script and "https:" not in script and "fetch(" not in script
    for img in page.images:
        head, data = img["src"].split(",", 1)
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.verify()
            assert im.format == ("JPEG" if "jpeg" in head else "PNG")


def _scripted(model, monkeypatch, texts):
    queue = iter(texts)

    def generate(batch, **kwargs):
        rows = batch["input_ids"].shape[0]
        out = [next(queue) for _ in range(rows)]
        return GenerationOutput(torch.zeros(rows, 1, dtype=torch.long), torch.ones(rows, dtype=torch.long),
                                out, torch.arange(rows))

    monkeypatch.setattr(model, "generate", generate)


@pytest.fixture
def scripted_eval(tiny_model, synth_eval, tmp_path, monkeypatch):
    """An evaluation of the four test clips with chosen completions: two right, two wrong, one
    trying to inject markup."""
    from r1omni_fast.eval.runner import evaluate

    labels = [r["conversations"][1]["value"] for r in json.loads(synth_eval.test.read_text())]
    wrong = [next(x for x in SYNTH_LABELS if x != label) for label in labels]
    texts = [
        f"<think>Her face smiles and the voice is loud.</think><answer>{labels[0]}</answer>",
        f"<think>The eyes look down.</think><answer>{labels[1]}</answer>",
        f"<think><script>alert('x')</script> a quiet sigh</think><answer>{wrong[2]}</answer>",
        f"no tags, I say {wrong[3]}",
    ]
    _scripted(tiny_model, monkeypatch, texts)
    out = tmp_path / "eval"
    metrics = evaluate(tiny_model, synth_eval.test, out, label_set=LABELS, loader=media_load_batch(), batch_size=3,
                       progress=False)
    return out, metrics, labels


def test_eval_report_holds_every_prediction_and_nothing_external(scripted_eval):
    out, metrics, labels = scripted_eval
    html = (out / "report.html").read_text(encoding="utf-8")
    page = _parse(out / "report.html")
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(page.rows) == len(rows) == metrics["n"] == 4
    for shown, row in zip(page.rows, rows):
        assert shown["data-label"] == row["label"]
        assert shown["data-correct"] == ("right" if row["correct"] else "wrong")
        assert Path(row["video"]).name in shown["text"]
    assert [r["data-correct"] for r in page.rows] == ["right", "right", "wrong", "wrong"]
    # without JavaScript every row shows, and each completion sits in a <details> disclosure
    assert not any("hidden" in r for r in page.rows) and html.count("<details>") == 4
    _assert_self_contained(page)
    # a frame strip per clip (k thumbnails side by side) and a mel image per clip
    strips = [i for i in page.images if i["src"].startswith("data:image/jpeg")]
    mels = [i for i in page.images if i["alt"].startswith("log-mel")]
    assert len(strips) == len(mels) == 4
    with Image.open(io.BytesIO(base64.b64decode(strips[0]["src"].split(",", 1)[1]))) as im:
        assert im.size[0] == im.size[1] * 8  # 8 frames of the tiny checkpoint
    # the summary shows the metrics of the evaluation
    assert f'<td class="num big" id="war">{metrics["war"]:.3f}</td>' in html
    assert f'<td class="num big" id="uar">{metrics["uar"]:.3f}</td>' in html
    assert f'id="format-rate">{metrics["format_rate"]:.3f}<' in html
    assert metrics["war"] == 0.5
    # the model's text is escaped, never markup
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    # cue words highlighted by sense
    assert ["cue-visual", "face"] in page.marks and ["cue-audio", "voice"] in page.marks
    assert ["cue-audio", "loud"] in page.marks and ["cue-visual", "eyes"] in page.marks


def test_highlight_cues_matches_whole_words_and_escapes():
    from r1omni_fast.eval.report import highlight_cues

    out = str(highlight_cues("A <b>Smile</b>; surface & voice."))
    assert out == ('A &lt;b&gt;<mark class="cue-visual">Smile</mark>&lt;/b&gt;; surface &amp; '
                   '<mark class="cue-audio">voice</mark>.')
    assert str(highlight_cues(None)) == ""


def test_mel_image_cuts_whisper_padding():
    import numpy as np

    from r1omni_fast.eval.report import mel_image

    mel = np.full((8, 3000), -0.5, np.float32)
    mel[:, :250] = np.linspace(0, 1, 250)[None]
    head, data = mel_image(mel, width=50, height=8).split(",", 1)
    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=int)
    # 250 columns kept (the padding cut), drawn over 50 pixels: a ramp from dark to bright
    assert pixels[:, 0].sum() < pixels[:, -1].sum()
    assert len({tuple(p) for p in pixels[0]}) > 20


def test_ablation_report_rows_of_every_setting(tiny_model, synth_eval, tmp_path):
    from r1omni_fast.eval.runner import ablate

    ablate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(), num_frames=2,
           max_new_tokens=2, progress=False)
    page = _parse(tmp_path / "report.html")
    assert [r["data-setting"] for r in page.rows] == ["video+audio"] * 4 + ["video"] * 4 + ["audio"] * 4
    _assert_self_contained(page)
    assert any(i["alt"].startswith("per-class recall") for i in page.images)  # the ablation chart
    assert len([i for i in page.images if i["alt"].startswith("log-mel")]) == 12  # the mel of video+audio's load
    for folder in ("video_audio", "video", "audio"):
        assert len(_parse(tmp_path / folder / "report.html").rows) == 4


def test_eval_report_can_be_turned_off(tiny_model, synth_eval, tmp_path):
    from r1omni_fast.eval.runner import evaluate

    evaluate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(), max_new_tokens=1,
             report=False, progress=False)
    assert (tmp_path / "predictions.jsonl").is_file() and not (tmp_path / "report.html").exists()


# ------------------------------------------------------------------------- a real browser


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here: install Debian's `chromium` package (scripts/test.sh does)")


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # A profile of its own: several test runs may share the machine.
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, LANG="C"))


def _console(stderr: str) -> list:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_in_headless_chromium(scripted_eval, tmp_path):
    browser = _browser()
    out, metrics, labels = scripted_eval
    url = (out / "report.html").resolve().as_uri()
    profile = tmp_path / "profile"

    # The filters run at load from the fragment; --dump-dom prints the DOM after the scripts ran.
    run = _chromium(browser, profile, "--dump-dom", url + "#correct=wrong")
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console(run.stderr) == [], _console(run.stderr)
    page = _Page()
    page.feed(run.stdout)
    assert len(page.rows) == 4  # one row per clip
    hidden = [r["data-correct"] for r in page.rows if "hidden" in r]
    assert hidden == ["right", "right"]
    assert "2 of 4 rows" in run.stdout

    target = labels[2]
    run = _chromium(browser, profile, "--dump-dom", url + f"#label={target}&correct=wrong")
    page = _Page()
    page.feed(run.stdout)
    assert [r["data-label"] for r in page.rows if "hidden" not in r] == [target]
    assert _console(run.stderr) == []

    # sorting by a column (descending with "-"), ties kept in clip order
    run = _chromium(browser, profile, "--dump-dom", url + "#sort=-label")
    page = _Page()
    page.feed(run.stdout)
    order = [(r["data-label"], int(r["data-index"])) for r in page.rows]
    assert order == sorted(sorted(order, key=lambda x: x[1]), key=lambda x: x[0], reverse=True)  # stable
    assert [r["data-label"] for r in page.rows] != [r["data-label"] for r in _parse(out / "report.html").rows]
    assert _console(run.stderr) == []

    shot = tmp_path / "report.png"
    run = _chromium(browser, profile, "--hide-scrollbars", "--window-size=1400,1000", f"--screenshot={shot}", url)
    assert run.returncode == 0 and shot.is_file()
    with Image.open(shot) as im:
        assert im.size == (1400, 1000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # not a blank page

    # The console check can fail: a page whose script throws is caught.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    run = _chromium(browser, profile, "--dump-dom", broken.resolve().as_uri())
    assert any("undefinedFunction" in line for line in _console(run.stderr))


# ------------------------------------------------------------------------- Selenium (WebDriver)


def _chromedriver() -> str:
    found = shutil.which("chromedriver")
    if found is None:
        pytest.skip("no chromedriver here: install Debian's `chromium-driver` package "
                    "(bash scripts/setup.sh --with-test-tools does)")
    return found


def _webdriver(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _browser()  # the system browser: Selenium Manager downloads nothing
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path / 'webdriver-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(_chromedriver()), options=options)


def _open(driver, url: str) -> tuple[list, list]:
    """Loads ``url``; returns the console messages and the URLs the page requested."""
    driver.get_log("performance")  # drop what the start page logged
    driver.get(url)
    document = url.split("#", 1)[0]
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent" and message["params"].get("documentURL", "").startswith(document):
            requests.append(message["params"]["request"]["url"])
    return driver.get_log("browser"), requests


def _network(requests: list, document: str) -> list:
    """Requests that would leave the machine: anything but the page itself and data: URIs."""
    return [u for u in requests if not (u.split("#", 1)[0] == document or u.startswith("data:"))]


def test_report_in_selenium_click_filter_sort(scripted_eval, tmp_path):
    _chromedriver()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out, metrics, labels = scripted_eval
    predictions = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    url = (out / "report.html").resolve().as_uri()
    driver = _webdriver(tmp_path)
    try:
        console, requests = _open(driver, url)
        problems = [m for m in console if m["level"] in ("SEVERE", "WARNING")]
        assert problems == [], problems
        assert url in requests and _network(requests, url) == []

        def visible_rows():
            return [r for r in driver.find_elements(By.CSS_SELECTOR, "#predictions tbody tr") if r.is_displayed()]

        rows = visible_rows()
        assert len(rows) == 4 == len(predictions)
        # clicking a row opens its completion in full; clicking again closes it
        completion = rows[2].find_element(By.CSS_SELECTOR, "pre.completion")
        assert not completion.is_displayed()
        rows[2].find_element(By.CSS_SELECTOR, "td").click()
        assert completion.is_displayed()
        assert completion.text == predictions[2]["completion"]
        assert "<script>alert('x')</script>" in completion.text  # shown as text, not run
        think = rows[2].find_element(By.CSS_SELECTOR, "td.think")
        assert "a quiet sigh" in think.text
        assert [m.text for m in think.find_elements(By.CSS_SELECTOR, "mark.cue-audio")] == ["quiet", "sigh"]
        assert not rows[0].find_element(By.CSS_SELECTOR, "pre.completion").is_displayed()
        rows[2].find_element(By.CSS_SELECTOR, "td").click()
        assert not completion.is_displayed()

        # the filters hide the right rows and say how many are shown
        Select(driver.find_element(By.ID, "filter-correct")).select_by_value("wrong")
        assert [r.get_attribute("data-index") for r in visible_rows()] == ["2", "3"]
        assert driver.find_element(By.ID, "shown").text == "2 of 4 rows"
        Select(driver.find_element(By.ID, "filter-label")).select_by_value(labels[3])
        assert [r.get_attribute("data-index") for r in visible_rows()] == ["3"]
        assert driver.current_url.endswith(f"#label={labels[3]}&correct=wrong")
        Select(driver.find_element(By.ID, "filter-label")).select_by_value("")
        Select(driver.find_element(By.ID, "filter-correct")).select_by_value("")
        assert len(visible_rows()) == 4

        # sorting: a click on a header sorts ascending, a second click descending (ties in clip order)
        header = driver.find_element(By.CSS_SELECTOR, "#predictions th[data-key=label]")
        header.click()
        order = [(r.get_attribute("data-label"), int(r.get_attribute("data-index"))) for r in visible_rows()]
        assert order == sorted(order)
        header.click()
        order = [(r.get_attribute("data-label"), int(r.get_attribute("data-index"))) for r in visible_rows()]
        assert order == sorted(sorted(order, key=lambda x: x[1]), key=lambda x: x[0], reverse=True)

        shot = tmp_path / "report-selenium.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as im:
            colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50  # not a blank page
        assert [m for m in driver.get_log("browser") if m["level"] in ("SEVERE", "WARNING")] == []

        # the checks can fail: a page that throws and fetches from the network is caught
        broken = tmp_path / "broken.html"
        broken.write_text('<!DOCTYPE html><html><body><img src="http://192.0.2.1/x.png">'
                          "<script>undefinedFunction();</script></body></html>")
        console, requests = _open(driver, broken.resolve().as_uri())
        assert any("undefinedFunction" in m["message"] and m["level"] == "SEVERE" for m in console)
        assert _network(requests, broken.resolve().as_uri()) == ["http://192.0.2.1/x.png"]
    finally:
        driver.quit()
