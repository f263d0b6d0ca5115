"""Profiling: end_profiling() writes a Chrome trace (traceEvents) naming the nodes and the run tag."""

import json
import os

import numpy as np

import pyflame_rt as rt


def test_profile_is_chrome_trace_with_tag(tmp_path, mlp):
    opts = rt.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "prof")
    opts.optimization_level = 0  # every node of the graph runs (level 2 fuses fc1 and relu1)
    session = rt.InferenceSession(mlp.graph(), opts)
    assert session.get_profiling_start_time_ns() > 0

    ro = rt.RunOptions()
    ro.tag = "inference_batch_42"
    x = np.ones((2, 4), np.float32)
    session.run(None, {"x": x}, ro)
    session.run(None, {"x": x})

    path = session.end_profiling()
    assert isinstance(path, str)
    assert os.path.isfile(path)
    assert os.path.dirname(os.path.abspath(path)) == str(tmp_path)
    assert os.path.basename(path).startswith("prof")
    assert path.endswith(".json")

    with open(path) as f:
        trace = json.load(f)
    assert "traceEvents" in trace
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    for e in events:
        assert {"name", "ph", "ts", "pid", "tid"} <= set(e)
    names = {e["name"] for e in events}
    assert {"fc1", "relu1", "fc2", "add"} <= names
    assert "inference_batch_42" in json.dumps(trace)
    tagged = [e for e in events if e.get("args", {}).get("tag") == "inference_batch_42"]
    assert tagged


def test_profiling_disabled_by_default(mlp_session):
    assert mlp_session.get_profiling_start_time_ns() == 0
