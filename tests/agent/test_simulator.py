"""The simulator's pieces; the whole of it runs in tests/controlplane/test_demo.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from agent.simulator import (
    DEFAULT_IMAGES,
    build_parser,
    device_ids,
    load_samples,
    main,
    worker_argvs,
)


def test_device_ids_are_valid_and_sorted() -> None:
    assert device_ids("sim", 3) == ["sim-000", "sim-001", "sim-002"]
    ids = device_ids("f", 1500)
    assert ids[0] == "f-0000" and ids[-1] == "f-1499" and ids == sorted(ids)


def test_samples_are_pngs_of_the_test_set() -> None:
    samples = load_samples(DEFAULT_IMAGES)
    with np.load(DEFAULT_IMAGES) as data:
        assert len(samples) == len(data["labels"])
        first = np.asarray(Image.open(io.BytesIO(samples[0].png)))
        assert first.shape == (32, 32)
        assert (first[::4, ::4] == data["images"][0]).all()
        assert samples[0].label == int(data["labels"][0])


def test_bad_arguments_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--devices", "0"]) == 2
    assert "--devices must be >= 1" in capsys.readouterr().err
    assert main(["--tag", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert build_parser().parse_args(["--rate", "0.5"]).rate == 0.5


def test_a_big_fleet_is_split_across_worker_processes() -> None:
    argvs = worker_argvs(["--devices", "250", "--id-prefix", "f"], 250, per_process=120)
    slices = [build_parser().parse_args(a[3:]) for a in argvs]
    assert [(s.devices, s.first_index, s.fleet_size) for s in slices] == [
        (120, 0, 250), (120, 120, 250), (10, 240, 250),
    ]  # fmt: skip
    ids = [i for s in slices for i in device_ids("f", s.devices, s.first_index, s.fleet_size)]
    assert ids == device_ids("f", 250) and len(set(ids)) == 250
    assert device_ids("f", 2, first=998, total=1500) == ["f-0998", "f-0999"]  # padded alike
