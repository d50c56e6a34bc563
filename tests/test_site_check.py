"""mtlib.study.site_check: the site in a real browser (headless Chromium), and a test of that
test: a site broken on purpose fails it, once per kind of problem."""
from __future__ import annotations

import re
import shutil

import pytest

from mtlib.study import site_check
from tests.test_site import built  # noqa: F401  (the fixture: a site built by the report stage)

pytestmark = pytest.mark.slow  # Chromium: `make test` installs it


def test_the_site_passes_in_a_browser_and_each_kind_of_defect_fails_it(built, tmp_path):
    html = built / "reports" / "html"
    assert site_check.check_site(html) == []
    broken = tmp_path / "html"
    shutil.copytree(html, broken)
    page = broken / "03_finetune" / "head_only.html"
    page.write_text(page.read_text().replace('href="base_model.html"', 'href="gone.html"'))
    (image,) = re.findall(r'<img[^>]* src="(_images/[^"]+)"', (broken / "05_results.html").read_text())
    (broken / image).unlink()
    data = broken / "01_data.html"
    data.write_text(data.read_text().replace("</body>", "<script>throw new Error('on purpose')</script>"
                                                        "<p>Traceback (most recent call last):</p></body>"))
    problems = site_check.check_site(broken)
    assert "03_finetune/head_only.html: broken link to 03_finetune/gone.html (no such file)" in problems
    assert any(p.startswith("05_results.html: missing image") for p in problems)
    assert f"05_results.html: {image} answered 404" in problems
    assert any(p == "01_data.html: uncaught exception: on purpose" for p in problems)
    assert any(p.startswith("01_data.html: visible text holds a Python traceback") for p in problems)
    assert site_check.main([str(broken)]) == 1 and site_check.main([str(html)]) == 0


def test_a_site_over_the_size_limit_fails(tmp_path, monkeypatch):
    (tmp_path / "index.html").write_text("<!DOCTYPE html><html><body><p>ok</p></body></html>")
    monkeypatch.setattr(site_check, "MAX_BYTES", 10)
    problems = site_check.check_site(tmp_path)
    assert len(problems) == 1 and re.fullmatch(r".+: 0\.0 MB, more than the 0 MB a site may publish", problems[0])
