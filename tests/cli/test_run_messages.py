"""Bad input around run folders and their variants: one line on stderr that says what the command needs, exit 2."""
import pytest

from convlab.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("head", ["mlp:64,dropout=0.5.5", "mlp:64,dropout=.", "mlp:64,dropout=1..0"])
def test_a_malformed_head_dropout_is_one_line_naming_the_option_and_the_form(capsys, tmp_path, head):
    code, _, err = run_cli(capsys, "finetune", "--from", "torchvision:resnet18", "--head", head,
                           "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "--head", head, "mlp:WIDTH,dropout=P")
