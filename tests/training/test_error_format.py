"""User errors print as one paragraph whose paths survive the line wrapping intact."""

from __future__ import annotations

from macelab.cli import format_user_error
from macelab.errors import ConfigError


def test_long_hyphenated_paths_are_never_split_across_lines():
    path = "/tmp/pytest-of-root/pytest-181/popen-gw0/test_wrong_checkpoint_path-exi0/best.ckpt"
    text = f"the checkpoint given on the command line, {path} does not exist; pass another"
    message = format_user_error(ConfigError(text))
    lines = message.splitlines()
    assert len(lines) > 1 and lines[0].startswith("error: the checkpoint")
    assert any(path in line.split() for line in lines)
    assert all(len(line) <= 100 or path in line for line in lines)
    assert "\n\n" not in message


def test_whitespace_of_the_message_is_folded_into_one_paragraph():
    message = format_user_error(ConfigError("first line\n\n   second   line"))
    assert message == "error: first line second line"
