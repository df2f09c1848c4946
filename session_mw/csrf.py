"""The door side of the CSRF check: where a submitted synchronizer token is found.

The rule itself (which requests need the token, what it is, the cross-site refusal) is the
engine's (``Exchange.csrf_refuses_origin``, ``csrf_needs_token``, ``csrf_answer``); this module
only reads the token from the ``csrf_header`` header or, for an HTML form, from its
``csrf_field`` field. The form body is
read in full (up to ``MAX_FORM_BODY``) and handed back to the app unchanged.
"""

from __future__ import annotations

import io

from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

#: A form larger than this cannot carry its CSRF token in a field: send the header instead.
MAX_FORM_BODY = 1024 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def is_form(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in FORM_TYPES


def form_field(body: bytes, content_type: str, field: str) -> str | None:
    """The value of ``field`` in a urlencoded or multipart form body; None when absent or unreadable."""
    parser = FormDataParser(max_form_memory_size=MAX_FORM_BODY, max_content_length=MAX_FORM_BODY)
    mimetype, options = parse_options_header(content_type)
    try:
        _, form, files = parser.parse(io.BytesIO(body), mimetype, len(body), options)
    except Exception:  # a malformed form carries no token; the check refuses it
        return None
    for stored in files.values():
        stored.close()
    value = form.get(field)
    return value if isinstance(value, str) else None
