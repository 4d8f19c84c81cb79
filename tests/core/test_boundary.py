"""The one top-level error boundary (filelib/boundary.py): OS errors and Ctrl-C end in one line, no traceback.

In-process for the rules, then real commands as subprocesses: an output path under a regular file
(NotADirectoryError, which holds for root too), an output file that is a folder (IsADirectoryError),
and SIGINT sent to a judge waiting on an endpoint that never answers (exit 130, one line).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from filelib import run_main
from tools.core.paths import ROOT, Run


def ends(main, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        run_main(main)
    return e.value.code, capsys.readouterr().err


def raises(exc: BaseException):
    def main():
        raise exc

    return main


@pytest.mark.parametrize(
    "exc, line",
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/x.json"),
            "error: /data/x.json: permission denied",
        ),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/out"), "error: /f/out: not a directory"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/d"), "error: /d: is a directory"),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory", "a.json"),
            "error: a.json: no such file",
        ),
        (OSError(errno.ENOSPC, "No space left on device", "/big"), "error: /big: no space left on device"),
        (OSError(errno.ENOSPC, "No space left on device"), "error: no space left on device"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "error: /ro/x: read-only file system"),
        (
            OSError(errno.EISDIR, "Is a directory", "/tmp/.a.tmp", None, "/out"),
            "error: /tmp/.a.tmp -> /out: is a directory",
        ),
    ],
)
def test_file_errors_end_in_one_line_and_exit_2(exc, line, capsys):
    code, err = ends(raises(exc), capsys)
    assert code == 2
    assert err.splitlines() == [err.strip()] and err.strip().startswith(line), err


def test_ctrl_c_ends_in_one_line_and_exit_130(capsys):
    code, err = ends(raises(KeyboardInterrupt()), capsys)
    assert code == 130 and err == "error: interrupted (Ctrl-C)\n"


def test_a_closed_pipe_ends_quietly():
    """`python -m tools.train.configs list | head -1`: the reader stops, the command ends without a word."""
    code = (
        "import sys; from filelib import run_main; run_main(lambda: [print('x' * 100) for _ in range(10**5)])"
    )
    proc = subprocess.run(
        f'{sys.executable} -c "{code}" | head -1', shell=True, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.stdout == "x" * 100 + "\n" and proc.stderr == "", proc.stderr


def test_everything_else_is_left_alone(capsys):
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_main(lambda: 1 / 0)
    with pytest.raises(ConnectionRefusedError):  # an OSError that says nothing about a path
        run_main(raises(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")))
    assert ends(lambda: 3, capsys) == (3, "")
    assert ends(lambda: None, capsys) == (None, "")
    assert ends(raises(SystemExit(2)), capsys)[0] == 2


# ------------------------------------------------------------------------------------- real commands
def command(args: list[str], out: Path, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env |= {"SMALLDATA_OUT": str(out), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_output_folder_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "cfg"
    rc, err = finish(
        command(
            ["tools.train.configs", "render", "--study", "rank", "--model", "smollm2_135m", "--out", target],
            tmp_path,
        )
    )
    assert rc == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"error: {target}/rank: not a directory"], err
    assert (tmp_path / "afile").read_text() == "x"


def test_a_bad_output_place_is_found_before_anything_is_written(tmp_path):
    """filelib.check_place: the error atomic_write_text would meet, raised first and writing nothing
    (the render refuses its place before importing LLaMA-Factory to validate, 0.2 s instead of 10)."""
    from filelib import atomic_write_text, check_place

    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder.yaml").mkdir()
    for place, error in (
        (tmp_path / "afile" / "cfg" / "a.yaml", NotADirectoryError),
        (tmp_path / "afile" / "a.yaml", FileExistsError),
        (tmp_path / "folder.yaml", IsADirectoryError),
    ):
        with pytest.raises(error) as found:
            check_place(place)
        with pytest.raises(OSError) as written:
            atomic_write_text(place, "y")
        assert found.value.filename == str(place if error is IsADirectoryError else place.parent)
        assert found.value.errno == written.value.errno
        # the rename onto a folder names its temporary file first; the render names the folder (read first)
        assert written.value.filename == found.value.filename or written.value.filename2 == str(place)
    check_place(tmp_path / "new" / "deeper" / "a.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.yaml"]
    assert (tmp_path / "afile").read_text() == "x" and not list((tmp_path / "folder.yaml").iterdir())


RUN = "m/s/v"


def predictions(n: int = 2) -> Path:
    p = Run.parse(RUN).predictions("t", "greedy")
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"Explain {i}.",
            "input": "",
            "answer": f"A {i}.",
            "reference": f"R {i}.",
        }
        for i in range(n)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_output_file_that_is_a_folder(tmp_path):
    target = tmp_path / "cfg" / "rank" / "smollm2_135m_lora_sft_r8.yaml"
    (target / "inside").mkdir(parents=True)
    args = ["tools.train.configs", "render", "--study", "rank", "--model", "smollm2_135m", "--only", "r8"]
    rc, err = finish(command([*args, "--out", str(tmp_path / "cfg")], tmp_path))
    assert rc == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"error: {target}: is a directory"], err
    assert [p.name for p in target.iterdir()] == ["inside"]
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")], "a temporary file was left"


def ctrl_c_at_its_default() -> None:
    """In the child, before exec: SIGINT at its default disposition. A shell without job control starts a
    background job (`make test &`, nohup) with SIGINT ignored, an ignored signal stays ignored across exec,
    and Python then installs no handler: the judge would never see the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_a_judge_waiting_on_its_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLDATA_OUT", str(tmp_path))
    predictions()
    with socket.socket() as srv:  # an endpoint that takes the connection and never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.settimeout(120)
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
        args = ["tools.judge", "--run", RUN, "--testset", "t", "--base-url", url, "--model", "slow"]
        argv = [*args, "--timeout", "300", "--max-retries", "0", "--concurrency", "1"]
        proc = command(argv, tmp_path, preexec_fn=ctrl_c_at_its_default)
        try:
            conn, _ = srv.accept()  # the judge is now waiting for a reply
        except TimeoutError:
            proc.kill()
            pytest.fail(f"the judge never called: {proc.communicate()}")
        with conn:
            proc.send_signal(signal.SIGINT)
            rc, err = finish(proc, timeout=60)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.rstrip("\n").splitlines()[-1] == "error: interrupted (Ctrl-C)", err
    assert err.count("interrupted") == 1, err
    assert not Run.parse(RUN).scores("t", "greedy").exists()
