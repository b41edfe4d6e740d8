"""What the file tools tell the model: listings and pages of text, bounded in characters.

Names come from a disk that sandboxed code wrote, so any name that is not plain printable
text is escaped before the model reads it, and such a name never goes into a link.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.sandbox import workspace_ops
from workbench.sandbox.workspace_fs import MOUNT, shown
from workbench.sandbox.workspace_ops import Entry, Listing, TextPage
from workbench.widgets import format_size, plural

READ_LINE_CHARS = 2000  # characters of one line returned


def printable(name: str) -> bool:
    """A name safe to put in a link and a listing as is."""
    return name.isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in name)


def listed(name: str) -> str:
    """A name from the disk as the model reads it: odd characters escaped."""
    return name if printable(name) else repr(name)[1:-1]


def listing_text(listing: Listing, parts: Sequence[str], limit: int, shown_files: int) -> str:
    """The listing in at most about ``limit`` characters; ``shown_files``: how many of its
    files the user was shown with download links."""
    where = f"{MOUNT}/{'/'.join(parts)}" if parts else MOUNT
    if listing.is_file:
        [entry] = listing.entries
        if entry.kind != "file":
            return f"{where} is not a regular file; it has no download link."
        if not shown_files:
            return f"{where}: {format_size(entry.size)} (its name cannot be put in a link)."
        return f"{where}: {format_size(entry.size)}. The user was shown it with a download link."
    header = _listing_header(listing, where)
    footer = _listing_notes(listing, shown_files)
    budget = limit - len(header) - sum(len(line) + 1 for line in footer) - 80
    lines: list[str] = []
    for index, entry in enumerate(listing.entries):
        line = _entry_line(entry)
        if len(line) + 1 > budget:
            lines.append(f"[… {len(listing.entries) - index} more entries not listed here]")
            break
        lines.append(line)
        budget -= len(line) + 1
    return "\n".join([header, *lines, *footer])


def _listing_header(listing: Listing, where: str) -> str:
    files = [entry for entry in listing.entries if entry.kind == "file"]
    folders = sum(entry.kind == "folder" for entry in listing.entries)
    total = sum(entry.size for entry in files)
    stopped = f" (stopped after {workspace_ops.LIST_SCAN_LIMIT} entries)"
    return (
        f"{where}: {len(files)} {plural(len(files), 'file')} ({format_size(total)}), "
        f"{folders} {plural(folders, 'folder')}"
        + ("" if listing.complete else stopped)
        + (":" if listing.entries else ".")
    )


def _listing_notes(listing: Listing, shown_files: int) -> list[str]:
    notes: list[str] = []
    if not listing.complete:
        notes.append(
            f"Listing stopped after {workspace_ops.LIST_SCAN_LIMIT} entries: list a subfolder "
            "to see the rest."
        )
    if listing.not_entered:
        notes.append(
            f"Folders nested deeper than {workspace_ops.LIST_MAX_DEPTH} levels were not entered: "
            + ", ".join(listed(path) for path in listing.not_entered[:5])
            + (" …" if len(listing.not_entered) > 5 else "")
        )
    if listing.hidden:
        names = ", ".join(listed(path) for path in listing.hidden[:10])
        more = f" and {len(listing.hidden) - 10} more" if len(listing.hidden) > 10 else ""
        notes.append(
            f"Hidden entries not listed: {names}{more} (list one by its path to see inside)."
        )
    if shown_files:
        files = sum(entry.kind == "file" for entry in listing.entries)
        notes.append(
            f"The user was shown {'these' if shown_files == files else shown_files} "
            "files with download links."
        )
    return notes


def _entry_line(entry: Entry) -> str:
    name = listed(entry.path)
    match entry.kind:
        case "file":
            return f"{name}  {format_size(entry.size)}"
        case "folder":
            return f"{name}/"
        case "link":
            return f"{name}  (symbolic link, not followed)"
        case _:
            return f"{name}  (not a regular file)"


def page_text(page: TextPage, path: str, offset: int, limit: int, max_chars: int) -> str:
    """Lines ``offset + 1`` on of ``page``, at most ``limit`` of them and about ``max_chars``
    characters, numbered, saying how to read on."""
    total = len(page.lines)
    count = f"{total:,} {plural(total, 'line')}" + ("" if page.scanned_all else "+")
    about = f"{format_size(page.size)}, {count}"
    if page.encoding != "utf-8":
        about += f", not UTF-8: read as {page.encoding}"
    scanned = format_size(workspace_ops.READ_SCAN_BYTES)
    if total == 0:
        return f"{shown(path)} is empty ({about})."
    if offset >= total:
        if not page.scanned_all:
            return (
                f"{shown(path)} ({about}): read_file reads only the first {scanned} of a file, "
                f"{total:,} lines; use execute_python for the rest."
            )
        return f"{shown(path)} has {count}; offset {offset} is past the end."
    rows = _numbered_rows(page.lines, offset, limit, max_chars)
    end = offset + len(rows)
    header = f"{shown(path)} ({about}), lines {offset + 1}–{end}:"
    notes: list[str] = []
    if end < total:
        rest = f"{total - end:,}" + ("" if page.scanned_all else "+")
        notes.append(
            f"[{rest} more {plural(total - end, 'line')}: call read_file with offset={end} "
            "to continue]"
        )
    elif not page.scanned_all:
        notes.append(
            f"[the file goes on past the first {scanned}, which is all read_file reads; use "
            "execute_python for the rest]"
        )
    return "\n".join([header, *rows, *notes])


def _numbered_rows(lines: list[str], offset: int, limit: int, max_chars: int) -> list[str]:
    rows: list[str] = []
    used = 0
    for number, line in enumerate(lines[offset : offset + limit], start=offset + 1):
        if len(line) > READ_LINE_CHARS:
            extra = len(line) - READ_LINE_CHARS
            line = line[:READ_LINE_CHARS] + f" [… {extra:,} more characters on this line]"
        row = f"{number:>6}\t{line}"
        if rows and used + len(row) + 1 > max_chars:
            break
        rows.append(row)
        used += len(row) + 1
    return rows
