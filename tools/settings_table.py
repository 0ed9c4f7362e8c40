"""Print the settings table for the README from the pydantic-settings classes.

``python tools/settings_table.py`` prints it; ``--check README.md`` exits 1 when the README's
table (between the ``settings-table`` markers) differs, which tests/unit/test_docs.py runs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

CLASSES = [
    ("all", "kernel.settings", "CommonSettings"),
    ("serving", "serving.settings", "ServingSettings"),
    ("monitoring", "monitoring.settings", "MonitoringSettings"),
    ("controller", "controller.settings", "ControllerSettings"),
]
BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"


def _env_names(name: str, field: object, prefix: str) -> str:
    alias = getattr(field, "validation_alias", None)
    choices = getattr(alias, "choices", None)
    if choices:
        return " / ".join(f"`{c}`" for c in choices)
    return f"`{prefix}{name.upper()}`"


def rows() -> list[str]:
    seen: set[str] = set()
    out = ["| setting (environment) | used by | default | meaning |", "|---|---|---|---|"]
    for used_by, module, cls_name in CLASSES:
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ModuleNotFoundError, AttributeError):
            continue
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            default = field.default
            shown = "required" if field.is_required() else (
                "unset" if default is None else f"`{default}`")
            text = (field.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| {_env_names(name, field, prefix)} | {used_by} | {shown} | {text} |")
    return out


def table() -> str:
    return "\n".join(rows())


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        text = Path(argv[1]).read_text()
        current = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
        if current != table():
            print(f"{argv[1]}: the settings table is out of date; run "
                  "`python tools/settings_table.py --write README.md`", file=sys.stderr)
            return 1
        return 0
    if argv[:1] == ["--write"]:
        path = Path(argv[1])
        text = path.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(f"{head}{BEGIN}\n{table()}\n{END}{tail}")
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
