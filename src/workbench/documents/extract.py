"""The extraction subprocess: ``python -m workbench.documents.extract LIMITS_JSON``, then one
line ``{"path": ..., "kind": ...}`` on its stdin: the document to read.

Parsers read untrusted bytes, so they run here, never in the server: under an address-space
and a CPU-time limit set before any parser is imported, with the server's wall-clock limit
around it (``documents.reader``). A hostile file can at worst kill this process.

The document comes on stdin, not on the command line, so that the server can start this
process before it has a document for it (a spare, ``documents.reader``): it starts Python and
loads the PDF engine, then waits. Each process reads one document and exits; none sees two.
It exits quietly if stdin closes with no document (the server stopped).

It writes JSON lines to stdout, flushed as it goes so the server can index page 1 while page
2 is read:

* ``{"pages": N | null, "total": T | null}`` once the file is open (pages to read, pages in
  the file: more than N when over the page limit);
* ``{"chunks": [[text, page, heading], ...], "read": pages_read}`` per section read;
* ``{"error": "..."}`` when the file cannot be read (a sentence for a person), then exit 0
  (running out of memory included, however the parser reports it);
* ``{"done": true}`` at the end.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
from pathlib import Path
from typing import Any

from workbench.documents.chunks import chunks_of
from workbench.documents.formats import DocumentError, Limits, Section, open_document


def main(argv: list[str]) -> int:
    [limits_json] = argv
    options = json.loads(limits_json)
    _limit(resource.RLIMIT_AS, options["memory_bytes"])
    _limit(resource.RLIMIT_CPU, options["cpu_seconds"])
    _limit(resource.RLIMIT_CORE, 0)  # a parser crashing (or out of CPU) leaves no core dump
    limits = Limits(options["max_pages"], options["max_unpacked_bytes"])
    import pypdfium2  # noqa: F401  (loaded while waiting: PDFs are the long documents)

    job = sys.stdin.readline()
    if not job:
        return 0
    request = json.loads(job)
    try:
        document = open_document(Path(request["path"]), request["kind"], limits)
        _send({"pages": document.pages, "total": document.total})
        read = 0
        for section in document.sections():
            read = max(read, section.page or 0)
            _send({"chunks": _rows(section), "read": read})
    except DocumentError as error:
        _send({"error": str(error)})
        return 0
    except MemoryError:
        _send({"error": f"reading it needs more than {options['memory_bytes'] // 2**20} MiB"})
        return 0
    except RecursionError:
        _send({"error": "it is nested too deeply to read (a malformed or hostile file?)"})
        return 0
    except Exception as error:  # a parser's own bug on a malformed file: say so, not how
        if _near_memory_limit(options["memory_bytes"]):
            _send({"error": f"reading it needs more than {options['memory_bytes'] // 2**20} MiB"})
        else:
            _send({"error": f"its parser failed on it ({type(error).__name__}; corrupt?)"})
        return 0
    _send({"done": True})
    return 0


def _rows(section: Section) -> list[list[Any]]:
    return [[chunk.text, chunk.page, chunk.heading] for chunk in chunks_of([section])]


def _near_memory_limit(limit: int) -> bool:
    """Whether this process came within a tenth of its address-space limit: a parser in C
    (lxml, PDFium) that cannot allocate says so with an error of its own ("unknown error"),
    not a MemoryError."""
    try:
        found = re.search(r"VmPeak:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return False
    return found is not None and int(found.group(1)) * 1024 > limit * 0.9


def _limit(which: int, value: int) -> None:
    resource.setrlimit(which, (value, value))


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    # Out without tearing the interpreter down: nothing is left to clean up, and freeing a
    # large document's objects one by one can take as long as reading ten pages.
    os._exit(status)
