"""Text a page shows: whatever a run name, an error or a path holds stays literal in markdown and plotly."""
from __future__ import annotations

import html
import re

# What in one line of text can turn into something else in markdown (CommonMark, GFM, Streamlit's directives),
# escaped with a backslash. Anywhere: what starts code, emphasis, strikethrough, math, HTML, autolinks and
# entities; a "]" that would close a link, an image or a reference ("](", "][", "]:", or last: the caller's
# text may go on with "("); a ":" before a letter and a "[" after a word (":red[x]", or ":red" alone, which
# Streamlit's directives swallow); a "_" not inside a word (one inside, as in sam_rho, is literal). At the
# start: what would begin a heading, a list or a directive block. So "status.json" or "in [1, 65536], got 0"
# stays as typed, and a search in the page's markdown finds it.
_INLINE = re.compile(r"[\\`*~$&<>]|\](?=[(\[:]|$)|:(?=[A-Za-z])|(?<=[\w-])\[|(?<![^\W_])_|_(?![^\W_])")
_BLOCK = re.compile(r"^(?:[#+:-]|\d+(?=[.)]))")  # "1." / "1)": the escape goes before the "." or ")"
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)  # where GFM's bare links begin


def plain(text: object) -> str:
    """``text`` (a run name or id, an error, a path …) as literal text inside markdown — st.markdown, st.caption,
    st.error and the other alerts, labels, help and progress texts all render markdown: what could make a link,
    an image, HTML, math, code, emphasis or a block is backslash-escaped (``_INLINE``, ``_BLOCK``); a zero-width
    space inside "://" and after "www" and "@" keeps GFM from linking a bare URL or e-mail address (it finds
    those after reading the escapes); line breaks become spaces, so it stays on the caller's line."""
    s = _AUTOLINK.sub("\u200b", " ".join(str(text).splitlines()).strip())
    s = _INLINE.sub(r"\\\g<0>", s)
    return _BLOCK.sub(lambda m: m[0] + "\\" if m[0].isdigit() else "\\" + m[0], s, count=1)


def code(text: object) -> str:
    """``text`` as inline code inside markdown (nothing in a code span is active), whatever backticks it holds."""
    s = " ".join(str(text).splitlines())
    fence = "`" * (max(map(len, re.findall("`+", s)), default=0) + 1)
    pad = " " if s[:1] == "`" or s[-1:] == "`" else ""  # CommonMark drops one space each side
    return f"{fence}{pad}{s}{pad}{fence}"


def chart_text(text: object) -> str:
    """``text`` as literal text in a plotly title or legend, where plotly renders <a href>, <b>, <br> …"""
    return html.escape(str(text), quote=False)
