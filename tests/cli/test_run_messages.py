"""Bad input around run folders and their variants: one line on stderr that says what the command needs, exit 2."""
import pytest
from cli_output import assert_one_line_error, run_cli


@pytest.mark.parametrize("head", ["mlp:64,dropout=0.5.5", "mlp:64,dropout=.", "mlp:64,dropout=1..0"])
def test_a_malformed_head_dropout_is_one_line_naming_the_option_and_the_form(capsys, tmp_path, head):
    code, _, err = run_cli(capsys, "finetune", "--from", "torchvision:resnet18", "--head", head,
                           "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "--head", head, "mlp:WIDTH,dropout=P")
