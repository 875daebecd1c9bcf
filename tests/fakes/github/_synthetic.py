"""Large generated pull requests for load tests and benchmarks."""

from __future__ import annotations

from prreview.demo import FakeFile


def synthetic_files(file_count: int, *, lines_per_file: int = 40, defect_every: int = 10) -> list[FakeFile]:
    """Mostly modified Python files (a few lines changed each), some added, removed and renamed
    ones, a binary every 100 files, and a planted SQL injection every `defect_every` files.
    Deterministic."""
    return [_synthetic_file(i, lines_per_file, defect_every) for i in range(file_count)]


def _synthetic_file(index: int, lines_per_file: int, defect_every: int) -> FakeFile:
    name = f"src/pkg_{index // 50:02d}/module_{index:04d}.py"
    base_lines = [f"def function_{index}_{j}(value):\n    return value + {j}\n"
                  for j in range(lines_per_file // 2)]
    base = "".join(base_lines)
    head_lines = list(base_lines)
    for j in range(1, len(head_lines), 7):
        head_lines[j] = f"def function_{index}_{j}(value, scale=1):\n    return (value + {j}) * scale\n"
    if defect_every and index % defect_every == 0:
        head_lines.append(f"def lookup_{index}(cursor, user_id):\n"
                          f"    return cursor.execute(f\"SELECT * FROM t{index} WHERE id = {{user_id}}\")\n")
    head = "".join(head_lines)
    if index % 100 == 99:
        return FakeFile(f"assets/image_{index:04d}.png", head=b"\x89PNG\r\n\x1a\n" + bytes(range(64)) * 4)
    if index % 50 == 49:
        return FakeFile(name, base=base, head=base, previous_filename=name.replace("module_", "old_module_"))
    if index % 25 == 24:
        return FakeFile(name, base=base)
    if index % 10 == 9:
        return FakeFile(name, head=head)
    return FakeFile(name, base=base, head=head)
