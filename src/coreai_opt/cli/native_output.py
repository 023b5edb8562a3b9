"""Keep the Core AI runtime's native chatter off the terminal.

The runtime writes lines such as ``ODIE [default]: Loading function 'main'`` straight to
file descriptor 2, past Python's ``sys.stderr``. While the command runs, descriptor 2 is
pointed at a temporary file and the command's own messages go to a duplicate of the real
stderr; at the end the runtime's loading notices are dropped and anything else native code
wrote is shown (unless the command was quiet and succeeded).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from types import TracebackType
from typing import IO

from rich.console import Console

__all__ = ["NativeStderr"]

_NOISE = re.compile(r"^ODIE \[[^\]]*\]: Loading function\b")


class NativeStderr:
    """Context manager: ``console_stream`` is the real stderr while descriptor 2 is captured."""

    console_stream: IO[str]

    def __enter__(self) -> NativeStderr:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self.console_stream = os.fdopen(os.dup(self._saved), "w", buffering=1)
        self._capture = tempfile.TemporaryFile()
        os.dup2(self._capture.fileno(), 2)
        self._python_stderr = sys.stderr
        sys.stderr = self.console_stream
        return self

    def finish(self, *, show: bool, console: Console) -> None:
        """Show what native code wrote to descriptor 2, less the runtime's loading notices."""
        sys.stderr.flush()
        self._capture.seek(0)
        text = self._capture.read().decode(errors="replace")
        kept = [line for line in text.splitlines() if line.strip() and not _NOISE.match(line)]
        if show and kept:
            console.print("\n".join(kept), highlight=False, markup=False)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        sys.stderr = self._python_stderr
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self.console_stream.close()
        self._capture.close()
