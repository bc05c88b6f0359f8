"""Jinja2 environments that escape every value they print.

XML templates autoescape. YAML templates pass every ``{{ value }}`` through JSON, whose
strings, numbers, lists and maps are valid YAML flow scalars and collections, so a value with
quotes, colons or newlines stays one value.

jinja2 is imported on first render: commands that render nothing (``vnode list``) skip it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def _yaml_value(value: Any) -> str:
    import jinja2

    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    # JSON's \uXXXX escapes are YAML's too, but JSON writes a character beyond the BMP as a
    # surrogate pair, which YAML reads as two lone surrogates: every non-ASCII character is
    # written as YAML's own escape instead (\UXXXXXXXX beyond the BMP), the text staying ASCII
    # (no raw U+2028 or U+0085, which YAML would read as line breaks).
    return _NON_ASCII.sub(_yaml_escape, json.dumps(value, ensure_ascii=False))


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _yaml_escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _xml_value(value: Any) -> Any:
    # Parsers normalise raw newlines and tabs in attributes to spaces; character references
    # keep the value exactly what it was.
    import jinja2
    import markupsafe

    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    escaped = markupsafe.escape(value)
    for raw, reference in (("\n", "&#10;"), ("\r", "&#13;"), ("\t", "&#9;")):
        escaped = escaped.replace(raw, markupsafe.Markup(reference))
    return escaped


@functools.cache
def _environment(
    finalize: Callable[[Any], Any], autoescape: bool, package: str | None
) -> jinja2.Environment:
    import jinja2

    # The core's templates are a package of their own; a plugin's are in ``templates/``
    # beside its module or inside its package.
    loader = (
        jinja2.PackageLoader("vnode.templates", ".")
        if package is None
        else jinja2.PackageLoader(package, "templates")
    )
    return jinja2.Environment(
        loader=loader,
        autoescape=autoescape,
        finalize=finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_xml(template: str, /, *, package: str | None = None, **values: Any) -> str:
    """Render an XML template, every value escaped. ``package``: the plugin whose
    ``templates/`` directory holds it (its module's or package's ``__name__``); None: the
    core's own templates."""
    return _environment(_xml_value, True, package).get_template(template).render(**values)


def render_yaml(template: str, /, *, package: str | None = None, **values: Any) -> str:
    return _environment(_yaml_value, False, package).get_template(template).render(**values)
