"""The benchmark suite runs in quick mode and writes its table (timings are never asserted)."""

from __future__ import annotations

import json
import sys

from unilstm import bench


def test_quick_bench_writes_table(tmp_path, capsys):
    out = tmp_path / "bench"
    missing = str(tmp_path / "no-python")  # an absent peer is skipped
    code = bench.main(["--quick", "--out", str(out), "--repeats", "1", "--tf-python", missing])
    assert code == 0
    table = (out / "results.md").read_text()
    assert "| shape (T, B, in, H) | spec | mode | unilstm | torch.nn.LSTM | ratio |" in table
    for spec in bench.SPEC_NAMES:
        assert f"| {spec} | fw+bw |" in table
    assert "streaming_relu" in table
    report = json.loads((out / "results.json").read_text())
    rows = [r for r in report["results"] if "fw+bw" in r]
    assert len(rows) == len(bench.SPEC_NAMES)
    for r in rows:
        assert r["fw+bw"]["unilstm"] > 0 and r["fw+bw"]["torch"] > 0
        assert r["saved_bytes"]["unilstm"] > 0


def test_markdown_renders_peer_columns():
    report = {
        "machine": "test", "repeats": 1, "peers": ["keras x"],
        "results": [{
            "shape": [2, 1, 3, 4], "spec": "relu", "fw": {"unilstm": 0.002, "torch": 0.001},
            "fw+bw": {"unilstm": 0.004, "torch": 0.002}, "saved_bytes": {"unilstm": 2**20, "torch": 2**20},
        }],
        "peer_results": {"keras": [{"shape": [2, 1, 3, 4], "spec": "relu", "fw": 0.01, "fw+bw": 0.02}]},
    }
    text = bench.render_markdown(report)
    assert "| (2, 1, 3, 4) | relu | fw+bw | 4.0 | 2.0 | 2.00 | 20.0 | 5.00 | – | 1.0 / 1.0 |" in text


def test_parse_shape():
    assert bench.parse_shape("10,2,3,4") == (10, 2, 3, 4)


FAKE_PEER = '''
import json, sys
VERSION = "fake peer 1"
calls = []


def measure(case, repeats):
    calls.append(case["spec"])
    # the n-th request of a case answers n milliseconds: the report must hold the rounds' median
    n = calls.count(case["spec"])
    return {"shape": case["shape"], "spec": case["spec"], "fw": n / 1000, "fw+bw": 2 * n / 1000}
''' + bench.PEER_MAIN


def test_alternate_rounds_ask_a_serving_peer(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "KERAS_SCRIPT", FAKE_PEER)
    out = tmp_path / "bench"
    code = bench.main([
        "--quick", "--out", str(out), "--repeats", "1", "--alternate", "3", "--no-streaming",
        "--spec", "relu", "--spec", "lengths", "--tf-python", sys.executable,
    ])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    assert report["rounds"] == 3 and report["peers"] == ["fake peer 1"]
    assert report["peer_results"]["keras"] == [  # lengths has no Keras case; relu asked three times
        {"shape": [6, 3, 5, 8], "spec": "relu", "fw": 0.002, "fw+bw": 0.004}
    ]
    assert "Each case ran in 3 rounds" in (out / "results.md").read_text()


def test_median_of_rounds():
    rounds = [{"spec": "a", "fw": {"unilstm": t, "torch": 2 * t}, "fw+bw": {"unilstm": t, "torch": t},
               "saved_bytes": {"unilstm": 1}} for t in (3.0, 1.0, 2.0)]
    combined = bench.median_of_rounds(rounds)
    assert combined["fw"] == {"unilstm": 2.0, "torch": 4.0} and combined["saved_bytes"] == {"unilstm": 1}
