"""The ``hoi-mllm`` error handler: an OS error (a folder given for a file, a file for a folder) is one
line naming the path, with a non-zero exit code, not a traceback."""
import pytest
from helpers import save_images

from hoi_mllm.cli import main, os_error_message


def _run(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_data_stats_on_a_folder(tmp_path, capsys):
    err = _run(capsys, ["data", "stats", str(tmp_path)])
    assert f"hoi-mllm data: error: {tmp_path}" in err and "a folder where a file was expected" in err


def test_detections_file_detector_path_is_a_folder(tmp_path, capsys):
    save_images(tmp_path / "imgs", {"a.jpg": ((32, 32), 0)})
    err = _run(capsys, ["detections", str(tmp_path / "imgs"), "--detector", f"file:path={tmp_path}",
                        "--output", str(tmp_path / "out")])
    assert str(tmp_path) in err and "folder where a file was expected" in err


def test_output_that_is_a_file(tmp_path, capsys):
    save_images(tmp_path / "imgs", {"a.jpg": ((32, 32), 0)})
    taken = tmp_path / "taken"
    taken.write_text("")
    err = _run(capsys, ["detections", str(tmp_path / "imgs"), "--detector", "yolo:model=yolov8n.yaml,imgsz=64",
                        "--output", str(taken)])
    assert f"--output {taken}: is a file" in err
    err = _run(capsys, ["synth", "--output", str(taken), "--images", "1", "--quiet"])
    assert f"output folder {taken} is a file" in err
    assert taken.read_text() == ""


@pytest.mark.parametrize("exc,expected", [
    (IsADirectoryError(21, "Is a directory", "/tmp"), "/tmp: Is a directory (a folder where a file was expected)"),
    (NotADirectoryError(20, "Not a directory", "/a/b"), "/a/b: Not a directory (a file where a folder was expected)"),
    (PermissionError(13, "Permission denied", "/x", None, "/y"), "/x -> /y: Permission denied"),
    (FileNotFoundError("image not found: a.jpg"), "image not found: a.jpg"),  # our own message, printed as is
    (ValueError("bad"), "bad"),
])
def test_os_error_message(exc, expected):
    assert os_error_message(exc) == expected
