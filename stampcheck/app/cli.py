"""The `stampcheck` command: a thin layer that parses options and calls the stages (the commands are in
data_commands, train_commands and check_commands; main turns whatever they raise into one line).

Heavy imports (torch, fastai, icrawler) happen inside the commands, so `--help` and `compose`
start fast.
"""

from __future__ import annotations

import os
import signal

import typer
from rich.markup import escape

from stampcheck import errors
from stampcheck.device import DeviceError
from stampcheck.progress import console, shown

# the commands register themselves on the app as they are imported: in the order `--help` lists them
import stampcheck.app.data_commands  # noqa: F401  compose, preview, crawl
import stampcheck.app.train_commands  # noqa: F401  train, pretrain
import stampcheck.app.check_commands  # noqa: F401  qa, export, evaluate, demo
from stampcheck.app.base import FULL_ONLY, app


def main():
    """The console script: any error the commands did not turn into a message still ends as one
    line and a documented exit code, never a traceback."""
    main_pid, interrupted = os.getpid(), []

    def interrupt(signum, frame):
        # Ctrl-C, and SIGTERM (a service manager's stop) taken as one by every command from its first
        # second: one line and 130. Typer turns the KeyboardInterrupt into a silent exit 130, hence
        # the note. A command's own Ctrl-C handler (train: stop after the batch) takes SIGTERM too;
        # watch puts its own in place for both while it runs.
        if os.getpid() != main_pid and signum == signal.SIGTERM:  # a forked worker dies of it, as before
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        handler = signal.getsignal(signal.SIGINT)
        if signum == signal.SIGTERM and callable(handler) and handler not in (interrupt, signal.default_int_handler):
            return handler(signal.SIGINT, frame)
        interrupted.append(signum)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with it ignored (&)
        signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        rc = app(standalone_mode=False)  # typer.Exit(code) comes back as the return value here
        if interrupted and rc == errors.INTERRUPTED:
            console.print("[bold yellow]interrupted[/]")
    except typer.Exit as e:
        rc = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        console.print("[bold yellow]interrupted[/]")
        rc = errors.INTERRUPTED
    except typer.TyperException as e:  # bad options: the parser's own message, then the usage code
        e.show()
        rc = errors.USAGE
    except DeviceError as e:  # raised deep inside every command that runs a model
        console.print(f"[bold red]error:[/] {escape(shown(str(e)))}")
        rc = errors.USAGE
    except MemoryError:
        console.print("[bold red]error:[/] out of memory")
        rc = errors.FAILED
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if os.environ.get("STAMPCHECK_DEBUG"):
            raise
        missing = getattr(e, "name", None) or ""  # a runtime install (stampcheck[runtime]) has no torch...
        if isinstance(e, ModuleNotFoundError) and missing.split(".")[0] in FULL_ONLY:
            console.print(f"[bold red]error:[/] this command needs {missing.split('.')[0]}, which is not installed: "
                          + escape("pip install 'stampcheck[full]' (a runtime install runs `qa --engine onnx`)"))
        else:
            console.print(f"[bold red]error:[/] {escape(shown(f'{type(e).__name__}: {e}'))} "
                          "(a bug in stampcheck or a problem of the machine; STAMPCHECK_DEBUG=1 shows the traceback)")
        rc = errors.FAILED
    raise SystemExit(rc if isinstance(rc, int) else errors.OK)


if __name__ == "__main__":
    main()
