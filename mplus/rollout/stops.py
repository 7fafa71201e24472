"""Where a generated response ends: EOS or a stop string such as the next turn ``"\\n\\nHuman:"``.

Pure Python so it can be checked against hand-built token lists. A base model prompted with an HH
transcript often goes on to write the human's next turn itself, so the response ends at whichever
comes first: the EOS token or the first token that completes a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence


def find_response_end(
    pieces: list[str],
    token_ids: list[int],
    eos_token_id: int | None,
    pad_token_id: int | None,
    stop_strings: Sequence[str],
) -> tuple[int, bool]:
    """Finds how many generated tokens of one response to keep.

    Args:
        pieces: Decoded text of each generated token, one piece per token, same length as
            ``token_ids``.
        token_ids: Generated token ids of one response, without the prompt.
        eos_token_id: Id that ends a response, or None.
        pad_token_id: Id ``generate`` fills finished rows with, or None.
        stop_strings: Texts that end a response; one may span several tokens and start or end
            mid-token. Empty strings are ignored.

    Returns:
        ``(n_keep, stopped)``. On a stop, ``n_keep`` counts the tokens up to and including the
        EOS token or the token where a stop string completes, and ``stopped`` is True. Otherwise
        ``n_keep`` is the number of tokens before any trailing padding and ``stopped`` is False.
    """
    if len(pieces) != len(token_ids):
        raise ValueError(f"got {len(pieces)} pieces for {len(token_ids)} token ids")
    stops = [s for s in stop_strings if s]
    text = ""
    for i, (piece, token_id) in enumerate(zip(pieces, token_ids, strict=True)):
        if eos_token_id is not None and token_id == eos_token_id:
            return i + 1, True
        # A stop completed by this token ends in the new piece, so only the tail of the text that
        # could still hold its start needs searching: this keeps the scan linear in the length.
        prev_len = len(text)
        text += piece
        for stop in stops:
            if stop in text[max(0, prev_len - len(stop) + 1) :]:
                return i + 1, True
    n_keep = len(token_ids)
    if pad_token_id is not None:
        while n_keep > 0 and token_ids[n_keep - 1] == pad_token_id:
            n_keep -= 1
    return n_keep, False


def strip_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Cuts ``text`` before the first occurrence of any stop string (empty ones are ignored)."""
    cut = len(text)
    for stop in stop_strings:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]
