"""How `curate --help` and each command's help read: workflow order, plain metavars, no cut lines."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperGroup

# Commands in the order a user meets them; any command not named here follows, in registration order.
ORDER = ("embed", "import-vectors", "train-encoder", "info", "errors", "meta", "select", "labeled", "unselect",
         "export", "evaluate", "dedup", "slice", "leaks", "map", "report", "index", "drop", "demo")
_TYPE_NAMES = {"int": "INTEGER", "float": "FLOAT", "bool": "BOOL", "Path": "PATH"}


class _PlainArgument(TyperArgument):
    """An argument shown as NAME (usage) and without a `<str>` type label (help)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _rich_display_name(self) -> str:
        return self._usage_display_name().strip("[]")

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper() + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"


def tidy_params(command: Any) -> Any:
    """Click-style metavars (TEXT, INTEGER, SOURCE) instead of typer's `<str>`/`<bool>` labels;
    flags show none; examples are never rewrapped."""
    if command.help:  # "\b" keeps click from rewrapping an example, so it stays one copyable line
        command.help = "\n\n".join(
            "\b\n" + par if par.startswith("Example") else par for par in command.help.split("\n\n")
        ).replace("\b\n\b\n", "\b\n")
    for p in command.params:
        if p.metavar is not None or isinstance(p, _PlainArgument):
            continue
        if isinstance(p, TyperArgument):  # typer ships its own copy of click: no click classes here
            p.__class__ = _PlainArgument
        elif p.param_type_name == "option" and not p.is_flag:
            bare = p.bare_type().removeprefix("list[").removesuffix("]")  # typer's names: int, list[str]
            p.metavar = _TYPE_NAMES.get(bare, "TEXT")
    return command


class CurateGroup(TyperGroup):
    """Workflow order, tidy help, and one-line errors for whatever a command did not catch."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]

    def get_command(self, ctx: Any, cmd_name: str) -> Any | None:
        cmd = super().get_command(ctx, cmd_name)
        return tidy_params(cmd) if cmd is not None else None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The whole first sentence of each command's help, wrapped, never cut with '...'."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: Any) -> Any:
        """Expected failures that escape a command (a full output disk, a write to a read-only
        store) still end in one `error:` line, never a traceback."""
        from curate.cli.common import fail
        from curate.files import OutputError
        from curate.store import StoreError

        try:
            return super().invoke(ctx)
        except (OutputError, StoreError) as e:
            fail(str(e))
