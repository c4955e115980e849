"""What a person reads is plain words: no markdown code quotes in any message the app writes.

Pages run messages through failures.plain(), which drops them, but alert emails, /healthz,
checkbackups and the commands print messages as they are: so no string the app could show
carries a backtick at all (docstrings aside, and the one pattern that finds them).
"""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "backups_app"
# The pattern that removes code quotes from text coming from elsewhere (core/failures.py).
ALLOWED = {("core/failures.py", r"`([^`\n]*)`")}


def docstrings(tree):
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def quoted_strings():
    for path in sorted(APP.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = docstrings(tree)
        name = path.relative_to(APP).as_posix()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "`" in node.value
                and id(node) not in skip
                and (name, node.value) not in ALLOWED
            ):
                yield f"{name}:{node.lineno}: {node.value!r}"


def test_no_message_of_the_app_carries_a_backtick():
    assert list(quoted_strings()) == []
