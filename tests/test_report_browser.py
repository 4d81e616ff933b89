"""Open the HTML reports in headless Chromium and check that the tables and the images really render."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lifelong.report.html import write_comparison_report, write_run_report
from tests.report_helpers import make_comparison, make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless browser test needs chromium "
                                                         "(apt-get install -y chromium); CI installs it")

# Appended to a *copy* of the report (the report itself has no script): once the page has loaded, record how
# every image decoded and how big every table is, as an attribute that --dump-dom then shows.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.clientWidth]);
  const tables = [...document.querySelectorAll('table')].map(t => [t.className, t.rows.length, t.clientHeight]);
  document.body.setAttribute('data-probe', JSON.stringify({imgs, tables}));
});
</script>"""


class BodyProbe(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.probe: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "body" and dict(attrs).get("data-probe"):
            self.probe = json.loads(dict(attrs)["data-probe"])


def render(page: Path, tmp_path: Path) -> dict:
    probe_page = page.with_name("probe.html")
    probe_page.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,900",
           "--virtual-time-budget=5000", "--dump-dom", probe_page.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    parser = BodyProbe()
    parser.feed(out.stdout)
    assert parser.probe is not None, f"chromium gave no DOM (rc={out.returncode}): {out.stderr[-500:]}"
    return parser.probe


def test_reports_render_in_headless_chromium(tmp_path):
    run_page = write_run_report(make_run(tmp_path / "run"))
    probe = render(run_page, tmp_path)
    assert len(probe["imgs"]) == 3
    for complete, w, h, shown in probe["imgs"]:
        assert complete and w > 200 and h > 150 and shown > 100  # decoded PNGs, laid out on the page
    tables = {cls: (rows, height) for cls, rows, height in probe["tables"]}
    assert tables["results"][0] == 16 and tables["matrix"][0] == 5 and tables["gaps"][0] == 3
    assert all(height > 0 for _, height in tables.values())

    cmp_page = write_comparison_report(make_comparison(tmp_path / "cmp"))
    probe = render(cmp_page, tmp_path)
    assert len(probe["imgs"]) == 5 and all(c and w > 200 for c, w, _, _ in probe["imgs"])
    tables = {cls: rows for cls, rows, _ in probe["tables"]}
    assert tables["summary"] == 3 and tables["results"] == 5 and tables["runs"] == 5


TEXT_PROBE = """<script>
window.addEventListener('load', () => { document.body.setAttribute('data-text', document.body.innerText); });
</script>"""


class TextProbe(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "body" and dict(attrs).get("data-text") is not None:
            self.text = dict(attrs)["data-text"]


def rendered_text(page: Path, tmp_path: Path) -> str:
    """The page's text as Chromium lays it out, and a screenshot of it beside the page (the test's artifact)."""
    probe_page = page.with_name("text-probe.html")
    probe_page.write_text(page.read_text().replace("</body>", TEXT_PROBE + "</body>"))
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,2400", "--hide-scrollbars"]
    shot = tmp_path / f"{page.parent.name}-screenshot.png"
    subprocess.run([*base, f"--screenshot={shot}", page.resolve().as_uri()], capture_output=True, timeout=60)
    assert shot.is_file() and shot.stat().st_size > 10_000, "no screenshot"
    out = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", probe_page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=60)
    parser = TextProbe()
    parser.feed(out.stdout)
    assert parser.text is not None, f"chromium gave no DOM: {out.stderr[-500:]}"
    return parser.text


def test_rendered_numbers_are_for_people(tmp_path):
    """As a user reads the pages: percentages, no 4-decimal zeros, no '± 0' for one seed, FWT hidden in a
    class-incremental stream, min-ACC / WC-ACC / gap columns when continual evaluation ran."""
    run_text = rendered_text(write_run_report(make_run(tmp_path / "run")), tmp_path)
    assert "min-ACC\t37.5%" in run_text and "WC-ACC\t58.3%" in run_text
    assert "0.0000" not in run_text and "forward transfer (FWT)" not in run_text
    assert "Forward transfer (FWT) is not shown" in run_text

    cmp_dir = make_comparison(tmp_path / "cmp")
    data = json.loads((cmp_dir / "compare.json").read_text())
    data["results"] = [r for r in data["results"] if r["seed"] == 0]  # one seed per strategy
    data["results"][0].update(bwt=-1e-5, stability_gaps=[{"size": 0.25}, {"size": 0.125}])
    (cmp_dir / "compare.json").write_text(json.dumps(data))
    text = rendered_text(write_comparison_report(cmp_dir), tmp_path)
    assert "naive\t80.0%\t19.0%" in text and "80.0% ±" not in text  # one seed: no spread shown
    assert "-0.001%" in text and "0.0000" not in text  # a tiny BWT keeps its digits
    assert "mean stability gap" in text and "18.8%" in text  # (25% + 12.5%) / 2
    assert "min-ACC" in text and "WC-ACC" in text
    assert list(tmp_path.glob("*-screenshot.png"))
