"""``sluice validate``: exit codes and the exact output format."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.validate import main
from tests.unit.config.util import BODY, doc

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "services"


def test_valid_examples_print_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(EXAMPLES)]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: 2 services, 4 versions, 5 endpoints in 2 files\n"
    assert err == ""


def test_single_file_summary_is_singular(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(EXAMPLES / "chat.yaml")]) == 0
    assert capsys.readouterr().out == "ok: 1 service, 2 versions, 2 endpoints in 1 file\n"


def test_every_error_printed_with_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    body = BODY.replace("port: 8000", "port: 70000").replace("weight: 100", "weight: 60")
    bad.write_text(doc(body + "loadBalancing: {policy: maglev}\n"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: ModelService\nspec: [\n")
    assert main([str(bad), str(broken)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{bad}:7:3: spec.versions: version weights must add up to 100, got 60 (v1: 60)",
        f"{bad}:11:37: spec.versions[0].endpoints[0].port: must be between 1 and 65535 "
        "(got 70000)",
        f"{bad}:12:27: spec.loadBalancing.hashKey: policy maglev hashes requests: add "
        "loadBalancing.hashKey, e.g. hashKey: {header: x-session-id} (or cookie: {name: ...}, "
        "or sourceIp: true)",
        f"{broken}:3:1: YAML syntax error: while parsing a flow node: expected the node "
        "content, but found '<stream end>'",
        f"4 errors; documents with errors: ModelService chat ({bad}:1); files that did "
        f"not load: {broken}",
    ]


def test_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "usage: sluice validate" in capsys.readouterr().err


def test_an_unreachable_prometheus_is_reported_at_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "apiVersion: sluice.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec:\n"
        "  service: chat\n  baseline: v1\n  candidate: v1b\n  steps: [5]\n"
        f"  metricsSource: {{prometheus: {{url: 'http://127.0.0.1:{port}'}}}}\n"
        "  metrics: [{name: e, kind: error_rate, harmMargin: 0, nonInferiorityMargin: 0}]\n")
    assert main([str(exp)]) == 1
    err = capsys.readouterr().err
    assert f"{exp}:9:37: spec.metricsSource.prometheus.url: cannot reach Prometheus" in err
    assert main(["--offline", str(exp)]) == 1  # offline: only the missing service remains
    assert "cannot reach" not in capsys.readouterr().err
