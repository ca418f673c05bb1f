"""Options and helpers shared by every command module. No analysis logic lives here."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from curate import config
from curate.store import Store, StoreError, open_store

console = Console(soft_wrap=True)  # no hard wraps in logs and pipes
err_console = Console(stderr=True, soft_wrap=True)

StoreOpt = typer.Option(None, "--store", help="Embedded store folder (env CURATE_STORE; default ./.curate).")
UrlOpt = typer.Option(
    None,
    "--qdrant-url",
    help="Qdrant server URL instead of the embedded store "
    "(env CURATE_QDRANT_URL); API key from CURATE_QDRANT_API_KEY.",
)
CollectionOpt = typer.Option(
    None, "--collection", "-c", help="Collection name (env CURATE_COLLECTION; default pool)."
)
EncoderOpt = typer.Option(
    None, "--encoder", help="Which stored encoder's vectors to use (needed when several)."
)
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (env CURATE_DEVICE).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars; only the summary line.")


def settings(**flags: object) -> config.Settings:
    try:
        return config.resolve(**flags)
    except ValueError as e:
        fail(str(e))
        raise  # unreachable


@contextlib.contextmanager
def store_from(s: config.Settings, create: bool = False, write: bool = False) -> Iterator[Store]:
    """Open the configured store and always close it, so the embedded store's lock is released.

    Only `create=True` (embed) makes a missing embedded store: any other command run from the wrong
    folder says so instead of leaving an empty `.curate/` behind. `write=True` fails at once on a
    read-only store (read-only stores otherwise serve reads and refuse the first write)."""
    options = s.server_options
    if not s.qdrant_url and not options.is_default:
        err_console.print("note: shards, replicas, write_consistency and on_disk apply to a Qdrant server "
                          "(CURATE_QDRANT_URL); the embedded store ignores them", highlight=False)
    store = open_store(s.store, s.qdrant_url, s.qdrant_api_key, create=create, options=options)
    if write and getattr(store, "read_only", False):
        store.close()
        raise StoreError(f"the store {store.location} is read-only, and this command writes to it; "
                         "make it writable, or copy it and point --store at the copy")
    try:
        yield store
    finally:
        store.close()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """Text from outside (file names, paths) made safe to print with rich: control characters
    (ANSI escapes, newlines) become visible \\xNN escapes, bytes that are not UTF-8 become
    \\xNN too, and rich markup is escaped."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr, then exit. Commands turn expected errors into this."""
    err_console.print(f"[bold red]error:[/] {shown(message)}", highlight=False)  # paths may hold [..]
    raise typer.Exit(code)
