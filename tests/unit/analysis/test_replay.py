import json
from pathlib import Path
from typing import Any

import pytest

from controlplane.replay import main

EXAMPLES = Path(__file__).parents[3] / "examples" / "experiments"
EXPERIMENT = str(EXAMPLES / "canary.yaml")
BUCKETS = {"100": 5, "250": 9, "+Inf": 10}


def line(t: float, v: str, n: int = 10, e: int = 0, **extra: Any) -> str:
    obj: dict[str, Any] = {"t": t, "version": v, "requests": n, "errors": e,
                           "latency": {"unit": "ms", "buckets": BUCKETS, "sum": 1200.0}}
    obj.update(extra)
    return json.dumps(obj)


def write(tmp_path: Path, name: str, lines: list[str]) -> str:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_example_replays_roll_back_the_regression_only(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--experiment", EXPERIMENT, str(EXAMPLES / "samples-healthy.jsonl"),
               str(EXAMPLES / "samples-regression.jsonl")])
    assert rc == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    healthy = [o for o in out if o["file"].endswith("healthy.jsonl")]
    regression = [o for o in out if o["file"].endswith("regression.jsonl")]
    assert len(healthy) == 60 and len(regression) == 60
    assert all(o["decision"] != "ROLLBACK" for o in healthy)
    assert regression[-1]["decision"] == "ROLLBACK"
    for o in out:
        assert {"file", "t", "decision", "reason", "metrics"} <= set(o)
        for m in o["metrics"]:
            assert {"name", "verdict", "estimate", "interval", "evalue", "pvalue"} <= set(m)


def test_bad_lines_report_file_line_and_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.jsonl", [
        line(60, "v1"),
        "{not json",
        line(60, "v3"),
        json.dumps({"t": 120, "version": "v1", "requests": 5}),
        '{"t": NaN, "version": "v1", "requests": 1, "errors": 0}',
        line(180, "v1", n=3, e=4),
        line(240, "v1", bogus=1),
    ])
    assert main(["--experiment", EXPERIMENT, path]) == 2
    err = capsys.readouterr().err
    for n in (2, 3, 4, 5, 6, 7):
        assert f"{path}:{n}: " in err
    assert f"{path}:1:" not in err
    assert "errors: is required" in err and "NaN is not a number" in err


def test_bucket_layout_differing_between_versions_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = {"unit": "ms", "buckets": {"100": 5, "500": 9, "+Inf": 10}}
    path = write(tmp_path, "layout.jsonl", [line(60, "v1"), line(60, "v2", latency=other)])
    assert main(["--experiment", EXPERIMENT, path]) == 2
    assert f"{path}:2: latency: bucket bounds differ" in capsys.readouterr().err


def test_counter_reset_holds_and_many_files_are_accepted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.jsonl", [line(60, "v1"), line(60, "v2"),
                                    line(120, "v1", n=-500), line(120, "v2")])
    zero = {"unit": "ms", "buckets": {"100": 0, "250": 0, "+Inf": 0}}
    b = write(tmp_path, "b.jsonl", [line(60, "v1", n=0, latency=zero),
                                    line(60, "v2", n=0, latency=zero)])
    assert main(["--experiment", EXPERIMENT, a, b]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [o["file"] for o in out] == [a, a, b]
    assert out[1]["decision"] == "HOLD" and "counter reset" in out[1]["reason"]
    assert all(m["verdict"] == "NODATA" for m in out[2]["metrics"])


def test_compare_adds_kayenta_classification(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.jsonl", [line(60, "v1"), line(60, "v2")])
    assert main(["--experiment", EXPERIMENT, "--compare", a]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"][0]["kayenta"] in ("Pass", "High", "Low", "NoData")


def test_bad_experiment_yaml_reports_position(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text("apiVersion: sluice.dev/v1alpha1\nspec: [\n")
    assert main(["--experiment", str(exp), "x.jsonl"]) == 2
    assert f"{exp}:" in capsys.readouterr().err
    exp.write_text(Path(EXPERIMENT).read_text().replace("harmMargin: 0.05", "harmMargin: -1"))
    assert main(["--experiment", str(exp), "x.jsonl"]) == 2
    assert ":28:19: spec.metrics[1].harmMargin: must be at least 0.0 (got -1.0)" in (
        capsys.readouterr().err)
