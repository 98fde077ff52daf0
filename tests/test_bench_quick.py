"""The benchmark suite runs in quick mode and writes its table (timings are never asserted)."""

from __future__ import annotations

import json

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
