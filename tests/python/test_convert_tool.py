"""pyflame-convert: .onnx -> .pfm, statistics on stdout, one-line errors with exit status 1."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyflame_rt as rt
from pyflame_rt.tools import convert

from test_import import make_model, reference

onnx = pytest.importorskip("onnx")


@pytest.fixture
def onnx_path(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(make_model(), str(path))
    return path


def test_convert_success(tmp_path, onnx_path, capsys):
    out = tmp_path / "mlp.pfm"
    assert convert.main([str(onnx_path), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nodes:" in printed and "3" in printed
    assert "initializers:" in printed
    assert "parameters:" in printed
    assert "time:" in printed
    assert "warnings:" in printed
    assert out.exists() and rt.is_pfm_file(str(out))

    session = rt.InferenceSession(str(out))
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (y,) = session.run(None, {"input": x})
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-5)


def test_convert_missing_input(tmp_path, capsys):
    code = convert.main([str(tmp_path / "missing.onnx"), str(tmp_path / "out.pfm")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.onnx" in err and "error" in err
    assert not (tmp_path / "out.pfm").exists()


def test_convert_corrupt_input(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08garbage" * 10)
    assert convert.main([str(bad), str(tmp_path / "out.pfm")]) == 1
    err = capsys.readouterr().err.strip()
    assert err and err.count("\n") == 0


def test_convert_unwritable_output(tmp_path, onnx_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "m.pfm"
    assert convert.main([str(onnx_path), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err and err.count("\n") == 0


def test_convert_help():
    proc = subprocess.run([sys.executable, "-m", "pyflame_rt.tools.convert", "--help"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "IN" in proc.stdout and "OUT" in proc.stdout


def test_console_script(tmp_path, onnx_path):
    exe = shutil.which("pyflame-convert") or os.path.join(os.path.dirname(sys.executable), "pyflame-convert")
    if not os.path.exists(exe):
        pytest.skip("pyflame-convert is not installed")
    out = tmp_path / "cli.pfm"
    proc = subprocess.run([exe, str(onnx_path), str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    proc = subprocess.run([exe, str(tmp_path / "nope.onnx"), str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
