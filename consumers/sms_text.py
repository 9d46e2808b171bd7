"""SMS bodies: one short text per event, in GSM-7 where possible, always one segment.

A text in the GSM 03.38 alphabet costs 7 bits a character (160 to a segment; ``^{}[]~|\\€``
count twice, being escapes); one character outside it turns the whole text into UCS-2, 70
to a segment. So the fixed words here are plain GSM, and every value that comes from an
event is first brought into it where the meaning survives: composed (NFC, so ``e`` and a
combining acute become GSM's own ``é``), typographic quotes, dashes and
spaces to their ASCII look-alikes, accents the alphabet lacks dropped (``ć`` -> ``c``, while
``é`` stays). A value that still has characters outside it (a name in Japanese) keeps them;
then the text is UCS-2 and is cut to 70 UTF-16 units rather than 160 septets.

User text is cut on a character boundary (never inside a surrogate pair or before a
combining mark), line breaks and control characters become spaces, and a cut ends in
``...``. Every type renders to one segment, so an SMS costs one message.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from bookgen_events.events import Event, EventType

__all__ = ["GSM_SEGMENT", "UCS2_SEGMENT", "gsm_length", "is_gsm", "render", "to_gsm"]

GSM_SEGMENT = 160  # septets in one GSM-7 SMS
UCS2_SEGMENT = 70  # UTF-16 units in one UCS-2 SMS
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€")  # each sent as an escape and the character: 2 septets
_LOOKALIKES = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u00ab": '"', "\u00bb": '"', "\u2039": "'", "\u203a": "'",
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-", "\u2026": "...", "\u2022": "*", "\u00b7": ".",
        "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ",
        "\u00e7": "Ç",  # GSM has only the capital; Twilio's own smart encoding does the same
        "\u00e1": "a", "\u00ed": "i", "\u00f3": "o", "\u00fa": "u", "\u00ea": "e",
        "\u00e2": "a", "\u00ee": "i", "\u00f4": "o", "\u00fb": "u", "\u00eb": "e",
        "\u00ef": "i", "\u00c0": "A", "\u00c8": "E", "\u00ca": "E", "\u00cb": "E",
        "\u00cd": "I", "\u00d3": "O", "\u00da": "U", "\u00c1": "A", "\u00c2": "A",
        "\u00d4": "O", "\u00db": "U", "\u00ce": "I", "\u00cf": "I", "\u0153": "oe",
        "\u0152": "OE", "\u00ff": "y", "\u00f5": "o", "\u00e3": "a", "\u00d5": "O",
        "\u00c3": "A", "\u0141": "L", "\u0142": "l", "\u0110": "D", "\u0111": "d",
        "\u0131": "i",
    }
)  # fmt: skip
_SPACES = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ELLIPSIS = "..."


def is_gsm(text: str) -> bool:
    """Whether ``text`` can be sent in the GSM-7 alphabet (basic table or its extension)."""
    return all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text)


def gsm_length(text: str) -> int:
    """Septets ``text`` takes in GSM-7 (extension characters count two)."""
    return len(text) + sum(1 for ch in text if ch in _GSM_EXTENDED)


def _units(text: str) -> int:
    """UTF-16 code units (what a UCS-2 segment counts)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def to_gsm(text: str) -> str:
    """One line of ``text``, in GSM-7 wherever a look-alike or an unaccented letter keeps
    the meaning; characters with no such stand-in are kept as they are."""
    text = unicodedata.normalize("NFC", _SPACES.sub(" ", text)).translate(_LOOKALIKES)
    if is_gsm(text):
        return text
    out = []
    for ch in text:
        if ch in _GSM_BASIC or ch in _GSM_EXTENDED:
            out.append(ch)
            continue
        # A letter with an accent GSM lacks: its base letter, if that one is in GSM.
        base = "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
        out.append(base if base and is_gsm(base) else ch)
    return "".join(out)


def _cut(text: str, room: int, size: Any) -> str:
    """``text`` within ``room`` (as ``size`` counts), cut on a character boundary with
    ``...`` when it does not fit."""
    if size(text) <= room:
        return text
    room -= len(_ELLIPSIS)
    kept: list[str] = []
    used = 0
    for ch in text:
        cost = size(ch)
        if used + cost > room:
            break
        kept.append(ch)
        used += cost
    if len(kept) < len(text) and unicodedata.combining(text[len(kept)]):
        # Never keep a letter whose combining marks were cut off: drop it with what it kept.
        while kept and unicodedata.combining(kept[-1]):
            kept.pop()
        if kept:
            kept.pop()
    return "".join(kept).rstrip() + _ELLIPSIS


def compose(fixed: str, value: str = "", *, tail: str = "") -> str:
    """``fixed`` + ``value`` (user text, brought into GSM-7 and cut to fit) + ``tail``, in
    one segment: 160 septets in GSM-7, else 70 UTF-16 units."""
    fixed, tail = to_gsm(fixed), to_gsm(tail)
    value = to_gsm(value).strip()
    text = fixed + value + tail
    if is_gsm(text):
        size, limit = gsm_length, GSM_SEGMENT
    else:
        size, limit = _units, UCS2_SEGMENT
    room = limit - size(fixed) - size(tail)
    if room <= len(_ELLIPSIS):  # the fixed words alone fill the segment: cut them too
        return _cut(fixed + value + tail, limit, size)
    return fixed + _cut(value, room, size) + tail


_MAX_ID = 40  # of a job id or alert type in the fixed words; the rest goes to the message


def _job(event: Event) -> str:
    if not event.job_id:
        return "your job"
    job_id = event.job_id
    return f"job {job_id if len(job_id) <= _MAX_ID else job_id[: _MAX_ID - 3] + _ELLIPSIS}"


def render(event: Event) -> str:
    """The text for ``event``: what happened, to which job, in one segment."""
    d: Any = event.data
    job = to_gsm(_job(event))
    if event.type is EventType.COMPLETION:
        who = f"{d.character_name}'s biography" if d.character_name else "Your biography"
        if d.status == "completed":
            return compose("BookGen: ", who, tail=f" is ready ({job}).")
        return compose(f"BookGen: {job} ", str(d.status), tail=".")
    if event.type is EventType.ERROR_ALERT:
        label = "CRITICAL" if d.severity == "critical" else d.severity.capitalize()
        return compose(f"BookGen {label}: {job} failed: ", d.error)
    if event.type is EventType.PROGRESS_UPDATE:
        return compose(f"BookGen: {job} at {d.progress:g}%", f" - {d.phase}" if d.phase else "")
    if event.type is EventType.STATUS_CHANGE:
        was = f" (was {d.old_status})" if d.old_status else ""
        return compose(f"BookGen: {job} is now ", f"{d.new_status}{was}", tail=".")
    return compose(f"BookGen admin alert {to_gsm(d.alert_type)[:_MAX_ID]}: ", d.message)
