"""Reading jsonl files row by row, with one clear error that names the file and the line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def jsonl_rows(path: str | Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) of each non-blank line of a jsonl file of `what`; a ValueError naming the file (and
    the line) when it is missing, a folder, unreadable, not UTF-8, not JSON or not a JSON object."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; a jsonl file of {what} is expected")
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not valid JSON ({e.msg}, column {e.colno})") from None
                except (ValueError, RecursionError) as e:   # an integer past Python's digit limit, nesting too deep
                    raise ValueError(f"{path}:{number}: not readable JSON ({type(e).__name__})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: a JSON object is expected, not {type(row).__name__}")
                yield number, row
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
