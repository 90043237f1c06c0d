"""The operator console and the observability config, against the whole stack: Debian's
Prometheus with the shipped scrape config, and the console in a real headless Chromium."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from millrace.days import day_start_ms
from millrace.settings import CommonSettings
from millrace_cli.replay import replay
from millrace_flights.events import SCHEDULED, flight_events, load_flights
from millrace_stack.brokers import debian_program
from millrace_stack.observability import SHIPPED, write_prometheus_config
from millrace_stack.processes import free_port
from tests.e2e.stack import Stack, running_stack
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

MODEL = "flights-delay"
ROOT = Path(__file__).resolve().parents[2]
#: Screenshots of the browser test (CI keeps the folder as its artifact).
ARTIFACTS = Path(os.environ.get("MILLRACE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
#: A series of each service that Prometheus must find under the service's label.
SERIES = {
    "model-registry": "millrace_registry_alias_moves_total",
    "featurizer": "millrace_featurizer_events_total",
    "trainer": "millrace_trainer_samples_total",
    "predictor": "millrace_predictor_requests_total",
}


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The stack after three days of flights: versions published from the stream, predictions
    scored on live labels, one dead letter, and the console sampling every second."""
    trainer = {"MILLRACE_BASELINE_END": "2013-01-03", "MILLRACE_PUBLISH_EVERY": "12"}
    registry = {"MILLRACE_METRICS_INTERVAL_S": "1"}
    prefix = f"t{uuid.uuid4().hex[:10]}."
    tmp = tmp_path_factory.mktemp("console")
    extra = {"trainer": trainer, "model-registry": registry}
    with running_stack(tmp, kafka_bootstrap, redis_url, prefix, MODEL, extra) as s:
        flights = load_flights()
        first = flight_events(flights, day_start_ms("2013-01-03"), day_start_ms("2013-01-05"))
        replay(kafka_bootstrap, s.settings.events_topic, first)
        wait_until(lambda: s.versions() >= 3, 240, "the trainer to publish from the stream")
        # The predictor follows the predictions and labels from their end, so it scores
        # what is predicted and labelled from now on.
        then = flight_events(flights, day_start_ms("2013-01-05"), day_start_ms("2013-01-06"))
        scheduled = [e for e in then if e["type"] == SCHEDULED]
        predict(s, scheduled[:500])
        replay(kafka_bootstrap, s.settings.events_topic, then)
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(s.settings.events_topic, b'{"not": "an event"}', b"N14228")
        producer.flush(10)
        settle(s)
        predict(s, scheduled[500:600])
        wanted = {"predictor.live_log_loss", "trainer.rolling_log_loss"}
        try:
            wait_until(lambda: wanted <= sampled(s), 120, "the console to sample the scores")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it sampled {sorted(sampled(s))}") from None
        yield s


def predict(stack: Stack, flights: list[dict[str, Any]]) -> None:
    for flight in flights:
        response = stack.predictor.post("/predict", content=orjson.dumps(flight))
        assert response.status_code == 200, response.text


def settle(stack: Stack) -> None:
    """Wait for the trainer to finish what was replayed, so no promotion races a rollback."""
    counts = [stack.versions()]

    def settled() -> bool:
        counts.append(stack.versions())
        return len(counts) > 8 and counts[-1] == counts[-8]

    wait_until(settled, 240, "the trainer to finish the replayed batches", interval=1.0)


def sampled(stack: Stack) -> set[str]:
    series = stack.registry.get("/console/series", params={"hours": 1}).json()["series"]
    return {s["name"] for s in series}


def test_prometheus_with_the_shipped_config_finds_every_service(stack: Stack, tmp_path: Path):
    config = write_prometheus_config(tmp_path / "prometheus", stack.ports)
    port = free_port()
    command = [
        debian_program("prometheus", "prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    stack.procs.start("prometheus", command, {})
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)

    def query(expr: str) -> list[dict[str, Any]]:
        answer = api.get("/query", params={"query": expr}).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def answers() -> bool:
        try:
            return api.get("/status/buildinfo").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 60, "Prometheus to start")
        for service, metric in SERIES.items():
            wait_until(
                lambda m=metric, s=service: bool(query(f'{m}{{service="{s}"}}')),
                90,
                f"Prometheus to scrape {metric} from the {service}",
            )
        targets = api.get("/targets").json()["data"]["activeTargets"]
        assert {t["labels"]["service"]: t["health"] for t in targets} == dict.fromkeys(SERIES, "up")
        # Every panel of the shipped Grafana dashboard is a valid query with data behind it
        # (a rate needs two scrapes inside its window).
        dashboard = json.loads((SHIPPED / "grafana/dashboards/millrace.json").read_text())
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        for expr in exprs:
            wait_until(lambda e=expr: bool(query(e)), 60, f"data for the panel query {expr}")
    finally:
        stack.procs.stop("prometheus")


@pytest.fixture
def chromium() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = debian_program("chromium", "chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1500,3300")
    service = Service(executable_path=debian_program("chromedriver", "chromium-driver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(ARTIFACTS / "console.png"))
        driver.quit()


def test_the_console_shows_versions_and_curve_and_rolls_back_with_the_token(
    stack: Stack, chromium: WebDriver
):
    total = stack.versions()
    production = stack.alias()
    assert production is not None and production >= 2
    chromium.get(f"http://127.0.0.1:{stack.ports['model-registry']}/ui/?model={MODEL}")
    wait = WebDriverWait(chromium, 30)
    # The page redraws every few seconds, so each look reads the DOM in one script.
    wait.until(lambda _: count(chromium, "#versions tbody tr") == total)
    assert production_row(chromium) == production
    # The baseline's row gives its own fit, labelled (its prequential scores were untrained).
    assert "(fit)" in text(chromium, '#versions tbody tr[data-version="1"]')
    wait.until(lambda _: count(chromium, "#curve-loss canvas") > 0)
    legend = text(chromium, "#curve-loss .u-legend")
    assert "trainer rolling log-loss" in legend and "live log-loss v" in legend, legend
    assert "published (prequential log-loss)" in legend
    wait.until(lambda _: count(chromium, "#targets tbody td.up") == 3)

    # Without the token the registry refuses and nothing moves.
    chromium.find_element(By.ID, "rollback").click()
    wait.until(lambda _: "→ 401" in answer(chromium))
    assert stack.alias() == production

    chromium.find_element(By.ID, "token").send_keys(CommonSettings().token())
    reason = chromium.find_element(By.CSS_SELECTOR, "#rollback-form input[name=reason]")
    reason.send_keys("rolled back in the browser test")
    chromium.find_element(By.ID, "rollback").click()
    wait.until(lambda _: "→ 200" in answer(chromium))
    rolled_to = stack.alias()
    assert rolled_to is not None and rolled_to < production
    wait.until(lambda _: production_row(chromium) == rolled_to)
    moves = text(chromium, "#moves")
    assert moves.splitlines()[0].endswith("rolled back in the browser test"), moves


def test_the_series_survive_a_registry_restart(stack: Stack):
    names = ("trainer.rolling_log_loss", "featurizer.events_per_s", "predictor.live_log_loss")

    def settled_points() -> dict[str, list[list[float]]]:
        """Each series' points in buckets that no longer fill (older than two buckets)."""
        answer = series_answer(stack)
        cutoff = answer["to"] - 2 * answer["step"] - 2
        found = {s["name"]: s["points"] for s in answer["series"]}
        return {n: [p for p in found.get(n, []) if p[0] < cutoff] for n in names}

    wait_until(lambda: all(settled_points().values()), 60, "settled points of each series")
    before = settled_points()
    stack.restart_registry()
    after = settled_points()
    for name in names:
        assert after[name][: len(before[name])] == before[name], f"{name} lost points"
    newest = series_answer(stack)["to"]
    wait_until(
        lambda: any(p[0] > newest for s in series_answer(stack)["series"] for p in s["points"]),
        30,
        "the restarted registry to sample again",
    )


def series_answer(stack: Stack) -> dict[str, Any]:
    answer = stack.registry.get("/console/series", params={"hours": 1})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def answer(driver: WebDriver) -> str:
    return text(driver, "#answer")


def text(driver: WebDriver, selector: str) -> str:
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector
    )
    return str(found)


def count(driver: WebDriver, selector: str) -> int:
    return int(
        driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)
    )


def production_row(driver: WebDriver) -> int | None:
    found = driver.execute_script(
        """for (const row of document.querySelectorAll('#versions tbody tr')) {
             if (row.cells[2].innerText.includes('production')) return Number(row.dataset.version);
           }
           return null;"""
    )
    return None if found is None else int(found)
