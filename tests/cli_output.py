"""What a command printed, and the checks on it that several test files share: one-line errors and warnings."""
from convlab.cli import main


def run_cli(capsys, *args):
    """Run `convlab ARGS` in this process -> (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    """Exit code 2 and one line on stderr holding every fragment, no traceback."""
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def truncate_metrics(folder):
    """Cut a run's or variant's metrics.json short, as a crash while writing it would have."""
    path = folder / "metrics.json"
    path.write_text(path.read_text()[:40])
    return path


def one_warning(err, path):
    """One warning line on stderr naming the damaged `path` and the command that computes it again."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("warning: ") and str(path) in lines[0] and "convlab eval" in lines[0], lines[0]
