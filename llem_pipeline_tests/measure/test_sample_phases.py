"""Phase labels of the timeseries rows follow the reported window, not the request span."""

from __future__ import annotations

import numpy as np

from llem_pipeline.measure.samples import Samples
from llem_pipeline.measure.worker import sample_phases


def test_total_window_labels_every_sample_between_first_submit_and_last_token():
    t = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert sample_phases(t, 1.0, (1.0, 2.0), 2.0) == ["warmup", "warmup", "window", "window", "window", "idle"]


def test_steady_state_window_splits_ramp_up_and_drain_off():
    t = [0.9, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.1]
    assert sample_phases(t, 1.0, (1.3, 1.7), 2.0) == [
        "warmup", "ramp_up", "ramp_up", "window", "window", "drain", "drain", "idle"]


def test_window_rows_are_exactly_the_counted_samples():
    t = np.array([0.95, 1.0, 1.3, 1.31, 1.7, 1.71, 2.0])
    samples = Samples({"t_mono_s": t, "power_w": np.ones_like(t)}, ("GPU-x",))
    phases = sample_phases(list(t), 1.0, (1.3, 1.7), 2.0)
    assert phases.count("window") == len(samples.between(1.3, 1.7).columns["t_mono_s"]) == 3
