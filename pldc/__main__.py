"""The ``pldc`` entry point, kept small so that an interrupt while the CLI loads ends cleanly."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def run() -> int:
    """Load the command line and run it; Ctrl-C while loading exits 130 with one line.

    NOTE: an interrupt in the first tens of milliseconds, while Python itself starts, is still
    reported by Python with a traceback; no code of pldc runs yet at that point.
    """
    try:
        from pldc.cli import main
    except KeyboardInterrupt:
        print("pldc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
