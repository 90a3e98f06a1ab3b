"""The language server (`netdsl lsp`): an optional extra, `pip install netdsl[lsp]` (pygls, lsprotocol).

Rule: nothing else in netdsl imports this package, so the compiler's own dependencies stay the design's
five; `main` imports pygls only when the server starts and, without it, says which extra to install.
"""

from __future__ import annotations

import sys

MISSING = ("netdsl lsp needs the language server extra: pip install 'netdsl[lsp]' "
           "(it installs pygls and lsprotocol)")


def main() -> int:
    """Runs the server on standard input and output until the client exits; 1 without pygls."""
    try:
        import lsprotocol  # noqa: F401
        import pygls  # noqa: F401
    except ImportError:
        print(f"netdsl: error: {MISSING}", file=sys.stderr)
        return 1
    from netdsl.lsp.server import run

    run()
    return 0
