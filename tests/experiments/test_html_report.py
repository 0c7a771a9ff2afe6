"""The HTML report: self-contained, every claim; in a real browser, filters and details work."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framelab.experiments.claims import CLAIMS
from framelab.experiments.html_report import render_report, write_report
from framelab.lab.packets import ACK, FIN, PSH, SYN, Packet, format_trace

ENVIRONMENT = {
    "system": "Linux", "kernel": "6.1.0-test", "machine": "x86_64", "cpus": 2,
    "implementation": "CPython", "python": "3.11.7", "uvloop": None, "root": True,
}  # fmt: skip


def segment(t: float, forward: bool, flags: int, seq: int, ack: int, length: int = 0) -> Packet:
    a, b = ("127.0.0.1", 40000), ("127.0.0.1", 7000)
    (src, sport), (dst, dport) = (a, b) if forward else (b, a)
    return Packet(
        time=t, frame_len=66 + length, src=src, dst=dst, proto="tcp", ip_header_len=20,
        ip_total_len=52 + length, ip_id=0, dont_fragment=True, more_fragments=False,
        fragment_offset=0, sport=sport, dport=dport, tcp_flags=flags, seq=seq, ack=ack,
        window=512, tcp_header_len=32, payload_len=length,
    )  # fmt: skip


def a_trace() -> list[str]:
    """Handshake, a request held 40 ms for a delayed ACK, the close: as the lab prints it."""
    packets = [
        segment(0.000, True, SYN, 100, 0),
        segment(0.001, False, SYN | ACK, 900, 101),
        segment(0.002, True, ACK, 101, 901),
        segment(0.003, True, PSH | ACK, 101, 901, 4),
        segment(0.044, False, ACK, 901, 105),
        segment(0.045, True, PSH | ACK, 105, 901, 10),
        segment(0.046, True, FIN | ACK, 115, 901),
        segment(0.047, False, FIN | ACK, 901, 116),
        segment(0.048, True, ACK, 116, 902),
    ]
    return ["# write, write, read", *format_trace(packets, 0.0)]


def results() -> list[dict[str, Any]]:
    verdicts = ["confirmed", "partly", "differs", "skipped"]
    out = []
    for number, claim in enumerate(CLAIMS):
        out.append(
            {
                "experiment": "nagle" if number % 2 else "states",
                "claim": claim,
                "verdict": verdicts[number % 4],
                "summary": f"what {claim} showed <b>not markup</b>",
                "observed": {"rounds": number},
                "trace": a_trace() if claim in ("C18", "C10") else [],
                "parts": [{"part": "held back", "holds": True, "evidence": "43.9 ms"}],
            }
        )
    return out


def test_report_holds_every_claim_and_fetches_nothing(tmp_path: Path) -> None:
    pcap = tmp_path / "pcaps" / "C18.pcap"
    pcap.parent.mkdir()
    pcap.write_bytes(b"")
    chart = tmp_path / "nagle.png"
    chart.write_bytes(b"\x89PNG fake")
    path = write_report(
        tmp_path / "report.html", results(), environment=ENVIRONMENT,
        settings=[("net.ipv4.tcp_tw_reuse", "2"), ("net.ipv4.tcp_tw_recycle", None)],
        pcaps={"C18": pcap}, chart_files=[chart],
    )  # fmt: skip
    html = path.read_text()
    assert len(re.findall(r'<tr class="claim"', html)) == len(CLAIMS) == 40
    assert 'href="pcaps/C18.pcap"' in html
    assert "data:image/png;base64," in html  # the chart, inline
    assert "<b>not markup</b>" not in html and "&lt;b&gt;not markup&lt;/b&gt;" in html
    assert html.count("<svg") == 3  # two ladders and the state diagram
    assert "delayed ACK" in html and "6.1.0-test" in html and "tcp_tw_reuse" in html
    # self-contained: nothing to load from anywhere
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "@import" not in html


def test_claims_missing_from_the_run_are_listed_as_not_run() -> None:
    html = render_report(results()[:3], environment=ENVIRONMENT)
    assert len(re.findall(r'<tr class="claim"', html)) == 40
    assert len(re.findall(r'<tr class="claim"[^>]*data-verdict="not run"', html)) == 37


# -- in a real browser ----------------------------------------------------------------------
def chromium_driver() -> Any:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        missing = "chromium" if chromium is None else "chromedriver"
        pytest.skip(f"{missing} is not installed (Debian packages chromium, chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (the test extra)")
    return webdriver, Service, chromium, driver_path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    webdriver, service_class, chromium, driver_path = chromium_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,1000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=service_class(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def visible_claims(driver: Any) -> list[str]:
    rows = driver.find_elements("css selector", "tr.claim")
    return [row.get_attribute("data-claim") for row in rows if row.is_displayed()]


@pytest.mark.slow
def test_report_in_a_browser(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    path = write_report(tmp_path / "report.html", results(), environment=ENVIRONMENT)
    browser.get(path.as_uri())
    assert browser.title.startswith("framelab")
    assert len(visible_claims(browser)) == 40
    assert browser.find_element("id", "shown-count").text == "40"

    browser.find_element("css selector", 'button[data-verdict="differs"]').click()
    differs = [r["claim"] for r in results() if r["verdict"] == "differs"]
    assert visible_claims(browser) == differs
    browser.find_element("css selector", 'button[data-verdict="all"]').click()
    Select(browser.find_element("id", "experiment-filter")).select_by_value("nagle")
    nagle = [r["claim"] for r in results() if r["experiment"] == "nagle"]
    assert visible_claims(browser) == nagle
    Select(browser.find_element("id", "experiment-filter")).select_by_value("all")

    row = browser.find_element("id", "claim-C18")
    detail = browser.find_element("id", row.get_attribute("data-detail"))
    assert not detail.is_displayed()
    row.click()
    assert detail.is_displayed() and row.get_attribute("aria-expanded") == "true"
    ladder = detail.find_element("css selector", ".ladder svg")
    assert ladder.size["width"] > 300 and ladder.size["height"] > 100
    diagram = browser.find_element("css selector", "#state-diagram svg")
    assert diagram.size["width"] > 500 and diagram.size["height"] > 500
    row.click()
    assert not detail.is_displayed()

    browser.get("about:blank")
    browser.get(path.as_uri() + "#C10")  # a link to a claim opens it
    assert browser.find_element("id", "claim-C10").get_attribute("aria-expanded") == "true"
    assert browser.save_screenshot(str(tmp_path / "report.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
