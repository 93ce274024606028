"""The cascade's curve and the choice of the default threshold (pure), and the real models."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from agent.offload.config import DEFAULT_MIN_CONFIDENCE
from bench.cascade import (
    GRID,
    ROOT,
    Point,
    cascade,
    choose,
    every_threshold,
    measure,
    render_markdown,
    render_svg,
)

# Four cases, three classes. Edge top scores 0.9, 0.6, 0.99, 0.5; the edge is wrong on the second
# and fourth, the cloud only on the first.
EDGE = np.array(
    [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.005, 0.99, 0.005], [0.25, 0.25, 0.5]], np.float32
)
CLOUD = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.0, 1.0, 0.0], [0.9, 0.05, 0.05]], np.float32)
LABELS = np.array([0, 1, 1, 0])


@pytest.mark.parametrize(
    ("threshold", "offloaded", "correct"),
    [
        (0.0, 0, 2),  # edge alone
        (0.5, 0, 2),  # a top score equal to the threshold stays local (the policy: "under")
        (0.55, 1, 3),  # the 0.5 case goes to the cloud, which gets it right
        (0.6, 1, 3),
        (0.7, 2, 4),  # both edge errors offloaded
        (0.95, 3, 3),  # the edge's right 0.9 answer goes to the cloud, which is wrong
        (1.0, 4, 3),  # everything offloaded: the cloud alone
        (math.inf, 4, 3),
    ],
)
def test_cascade_at_a_threshold(threshold: float, offloaded: int, correct: int) -> None:
    (point,) = cascade(EDGE, CLOUD, LABELS, [threshold])
    assert (point.offloaded, point.correct, point.total) == (offloaded, correct, 4)
    assert point.offload_fraction == offloaded / 4
    assert point.accuracy == correct / 4


def test_a_threshold_above_one_offloads_a_float32_score_of_one() -> None:
    edge = np.array([[1.0, 0.0]], np.float32)
    cloud = np.array([[0.0, 1.0]], np.float32)
    (point,) = cascade(edge, cloud, np.array([1]), [float(np.nextafter(1.0, 2.0))])
    assert (point.offloaded, point.correct) == (1, 1)


def test_every_threshold_walks_the_whole_curve() -> None:
    thresholds = every_threshold(EDGE)
    assert thresholds[0] == 0.0 and thresholds[-1] == math.inf
    points = cascade(EDGE, CLOUD, LABELS, thresholds)
    assert [p.offloaded for p in points] == [0, 0, 1, 2, 3, 4]
    assert [p.correct for p in points] == [2, 2, 3, 4, 3, 3]


@pytest.mark.parametrize(
    ("edge", "cloud", "labels", "message"),
    [
        (np.zeros(3), np.zeros(3), np.zeros(3), "edge scores"),
        (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), "edge scores"),
        (np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2), "cloud scores"),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3), "labels"),
    ],
)
def test_cascade_rejects_mismatched_inputs(
    edge: np.ndarray, cloud: np.ndarray, labels: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cascade(edge, cloud, labels, [0.5])


def _p(threshold: float, offloaded: int, correct: int) -> Point:
    return Point(threshold, offloaded, correct, 100)


@pytest.mark.parametrize(
    ("points", "cloud_accuracy", "expected"),
    [
        # the fewest offloaded among those reaching the cloud's accuracy
        ([_p(0.9, 5, 97), _p(0.99, 10, 99), _p(0.999, 20, 99)], 0.99, 0.99),
        # above the cloud's accuracy counts as reaching it
        ([_p(0.9, 5, 97), _p(0.99, 10, 100), _p(0.999, 20, 99)], 0.99, 0.99),
        # none reaches it: the most accurate, then the fewest offloaded
        ([_p(0.9, 5, 97), _p(0.99, 10, 98), _p(0.999, 20, 98)], 0.99, 0.99),
        # equal offloads (no score between the thresholds): the lower threshold
        ([_p(0.97, 19, 99), _p(0.98, 19, 99)], 0.99, 0.97),
        ([_p(0.5, 0, 99)], 0.99, 0.5),
    ],
)
def test_choose(points: list[Point], cloud_accuracy: float, expected: float) -> None:
    assert choose(points, cloud_accuracy).threshold == expected


def test_choose_needs_points() -> None:
    with pytest.raises(ValueError, match="no points"):
        choose([], 0.9)


def test_the_report_renders() -> None:
    grid = cascade(EDGE, CLOUD, LABELS, [0.55, 0.7, 0.95])
    edge, cloud = cascade(EDGE, CLOUD, LABELS, [0.0, math.inf])
    chosen = choose(grid, cloud.accuracy)
    assert chosen.threshold == 0.55
    text = render_markdown(grid, edge, cloud, chosen, ["a fact"])
    assert "| **0.55** (default) | 1 (25.0 %) | 75.00 % | 1 |" in text
    assert "| edge alone | 0 (0.0 %) | 50.00 % | 2 |" in text
    assert "| cloud alone | 4 (100.0 %) | 75.00 % | 1 |" in text
    assert "- a fact" in text
    svg = ET.fromstring(render_svg(cascade(EDGE, CLOUD, LABELS, every_threshold(EDGE)), edge,
                                   cloud, chosen))  # fmt: skip
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == f"{ns}svg"
    assert len(svg.findall(f"{ns}path")) == 1 and len(svg.findall(f"{ns}circle")) == 1


@pytest.fixture(scope="module")
def measured() -> tuple[np.ndarray, ...]:
    return measure()


def test_the_real_models_score_as_their_manifests_say(measured: tuple[np.ndarray, ...]) -> None:
    """The agent's pre-processing on the real runtimes reproduces the build's test accuracy:
    the scores the sweep uses are the ones the fleet would produce."""
    edge, cloud, labels = measured
    assert edge.shape == cloud.shape == (450, 10)
    assert round(float((edge.argmax(1) == labels).mean()), 6) == 0.986667
    assert round(float((cloud.argmax(1) == labels).mean()), 6) == 0.993333


def test_the_documented_default_is_the_measured_one(measured: tuple[np.ndarray, ...]) -> None:
    edge, cloud, labels = measured
    (cloud_alone,) = cascade(edge, cloud, labels, [math.inf])
    chosen = choose(cascade(edge, cloud, labels, GRID), cloud_alone.accuracy)
    doc = (ROOT / "docs" / "cascade.md").read_text()
    assert f"| **{chosen.threshold:g}** (default) | {chosen.offloaded} (" in doc
    assert f"`min_confidence = {chosen.threshold:g}`" in doc


def test_the_agent_default_is_the_measured_threshold(measured: tuple[np.ndarray, ...]) -> None:
    edge, cloud, labels = measured
    (cloud_alone,) = cascade(edge, cloud, labels, [math.inf])
    chosen = choose(cascade(edge, cloud, labels, GRID), cloud_alone.accuracy)
    assert DEFAULT_MIN_CONFIDENCE == chosen.threshold, (
        "the agent's default min_confidence (agent/offload/config.py) should be the threshold "
        "bench/cascade.py measures; see docs/cascade.md"
    )
