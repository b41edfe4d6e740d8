"""Short thread titles after the first exchange."""

from __future__ import annotations

import logging

from workbench.agent.models import ModelCatalog

logger = logging.getLogger(__name__)

_MAX_LENGTH = 60
_INSTRUCTIONS = (
    "Write a title of at most six words for a conversation that starts with the user's message "
    "below. Answer with the title only: no quotes, no final punctuation."
)


def title_from_text(text: str) -> str:
    """The first line of the message, cut at a word boundary."""
    line = " ".join(text.split())
    if len(line) <= _MAX_LENGTH:
        return line or "New conversation"
    cut = line[: _MAX_LENGTH - 1].rsplit(" ", 1)[0]
    return cut + "…"


async def make_title(catalog: ModelCatalog, first_message: str, model: str | None) -> str:
    """A model-written title with a real provider; the first message with the demo model.

    A failing title call never fails the turn: the first message stands in.
    """
    fallback = title_from_text(first_message)
    client = catalog.client
    if client is None or not first_message.strip():
        return fallback
    name = model or catalog.default
    try:
        if catalog.provider == "openai":
            response = await client.responses.create(
                model=name, instructions=_INSTRUCTIONS, input=first_message[:4000],
                max_output_tokens=32, store=False,
            )  # fmt: skip
            title = response.output_text
        else:
            completion = await client.chat.completions.create(
                model=name,
                messages=[
                    {"role": "system", "content": _INSTRUCTIONS},
                    {"role": "user", "content": first_message[:4000]},
                ],
                max_tokens=32,
            )
            title = completion.choices[0].message.content or ""
    except Exception:
        logger.warning("title generation failed; using the first message", exc_info=True)
        return fallback
    title = title.strip().strip("\"'").strip()
    return title_from_text(title) if title else fallback
