"""Text -> syntax tree (:mod:`.ast`) with the LALR grammar in ``grammar/flow.lark``.

Every failure becomes a :class:`~augflow_dsl.errors.SpecError` with file, line,
column, the offending line and what was expected in plain words: bad bytes, tabs,
unbalanced indentation, an unexpected token, nesting deeper than
``MAX_NESTING`` and files over ``MAX_BYTES`` included.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import stat
import sys
from pathlib import Path

from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.indenter import DedentError, Indenter
from lark.visitors import Transformer_NonRecursive

from ..errors import Loc, Source, SpecError
from . import ast

MAX_BYTES = 1 << 20
MAX_NESTING = 64
MAX_NUMBER = 10**18  # the evaluator's limit too (evaluate.MAX_NUMBER)

GRAMMAR_FILE = Path(__file__).resolve().parents[2] / "grammar" / "flow.lark"
_PACKAGED_GRAMMAR = Path(__file__).resolve().parents[1] / "grammar" / "flow.lark"

# what each terminal means to a person reading the error
_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "COLON": "':'",
    "COMMA": "','", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "LBRACE": "'{'", "RBRACE": "'}'", "MINUS": "'-'", "PLUS": "'+'", "STAR": "'*'",
    "SLASH": "'/'", "__ANON_0": "'//'", "_NL": "the end of the line", "_INDENT": "an indented block",
    "_DEDENT": "the end of an indented block", "$END": "the end of the file",
}


class _FlowIndenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8


def _grammar_path() -> Path:
    return GRAMMAR_FILE if GRAMMAR_FILE.exists() else _PACKAGED_GRAMMAR


def cache_dir() -> Path | None:
    """This user's private folder for the parse-table cache, or None where none is safe.

    Lark's cache is a pickle: whoever can write the file runs code in every command that parses,
    so it is never kept in the shared temp folder (lark's default, ``/tmp/.lark_cache_<user>_...``).
    The folder is ``$XDG_CACHE_HOME/augflow-dsl`` (else ``~/.cache/augflow-dsl``), created with
    mode 0700, and used only while it is a real folder owned by this user that nobody else can write.
    """
    if not hasattr(os, "getuid"):
        return None  # no owner to check against (Windows): build the tables each time
    base = os.environ.get("XDG_CACHE_HOME", "")
    try:
        root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
        folder = root / "augflow-dsl"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder if _private(os.lstat(folder), stat.S_ISDIR) else None
    except (OSError, RuntimeError):  # no home, read-only home: no cache
        return None


def _private(st: os.stat_result, kind) -> bool:
    """Whether ``st`` is of ``kind``, owned by this user and writable by no one else."""
    return kind(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _cache_file() -> str | bool:
    """The cache file for lark's ``cache=`` option, or False (no cache) where it is not safe.

    A file there that this user does not own, that others may write, or that is not a regular
    file (a link) is removed unread; where it cannot be removed no cache is used.
    """
    folder = cache_dir()
    if folder is None:
        return False
    import lark
    key = f"{lark.__version__}-{sys.version_info[0]}.{sys.version_info[1]}"
    path = folder / f"parser-{key}.lark"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return str(path)
    except OSError:
        return False
    if _private(st, stat.S_ISREG):
        return str(path)
    try:
        os.unlink(path)
    except OSError:
        return False
    return str(path)


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser. Its tables are cached in :func:`cache_dir` (keyed by lark on the grammar and
    options): about 0.01 s a start from the cache against 0.1 s to build them (docs/architecture.md)."""
    cache = _cache_file()
    built = Lark(_grammar_path().read_text(), parser="lalr", postlex=_FlowIndenter(),
                 propagate_positions=True, maybe_placeholders=False, cache=cache)
    if cache:
        with contextlib.suppress(OSError):  # lark writes it with open() under the umask: make it private
            os.chmod(cache, 0o600)
    return built


def _loc(meta) -> Loc | None:
    return Loc.of(meta)


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    # non-recursive: `1 + 1 + ... + 1` or `- - - 1` thousands deep must not hit Python's recursion
    # limit here; the evaluator refuses expressions nested deeper than its MAX_DEPTH, with a location
    def __init__(self, text: str):
        super().__init__()
        self._text = text

    # entries
    def start(self, meta, entries):
        return ast.Document(list(entries))

    def head(self, meta, children):
        names = [str(c) for c in children if isinstance(c, Token)]
        params = next((c for c in children if isinstance(c, tuple)), None)
        return ast.Head(names[0], names[1] if len(names) > 1 else None, params)

    def params(self, meta, children):
        return tuple(str(c) for c in children)

    def inline_entry(self, meta, children):
        head, value = children
        text = ""
        vmeta = getattr(value, "loc", None)
        if vmeta is not None:
            text = self._slice(value)
        return ast.Entry(head, value, _loc(meta), text)

    def block_entry(self, meta, children):
        head, body = children
        return ast.Entry(head, body, _loc(meta), "")

    def mapping_body(self, meta, entries):
        pairs = []
        for e in entries:
            if e.head.name is not None:
                raise SpecError(f"a definition ('{e.head.first} {e.head.name}') is allowed only at the top level",
                                e.loc)
            pairs.append(ast.Pair(e.head.first, e.value, e.loc))
        return ast.MapLit(_loc(meta), tuple(pairs))

    def list_body(self, meta, items):
        return ast.ListLit(_loc(meta), tuple(items))

    def item_value(self, meta, children):
        return children[0]

    def item_pair(self, meta, children):
        name, value = children
        return self._sugar_call(meta, name, value)

    def item_block(self, meta, children):
        name, *entries = children
        body = self.mapping_body(meta, entries)
        return self._sugar_call(meta, name, body)

    def _sugar_call(self, meta, name: Token, value):
        """`- block: {units: 6}` is the call `block(units: 6)`."""
        if isinstance(value, ast.MapLit):
            return ast.Call(_loc(name), str(name), (), value.pairs)
        raise SpecError(f"'- {name}: ...' needs a mapping of arguments after the ':' "
                        f"(write '- {name}(...)' for a call with positional arguments)", _loc(name))

    # values
    def number(self, meta, children):
        raw = str(children[0]).replace("_", "")
        try:
            value = int(raw)
        except ValueError:  # a float, or an integer with more digits than Python converts
            value = float(raw)
        if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_NUMBER:
            short = raw if len(raw) <= 24 else raw[:20] + "..."
            raise SpecError(f"number too large: {short} (a spec's numbers are at most {MAX_NUMBER:.0e})", _loc(meta))
        return ast.Num(_loc(meta), value)

    def string(self, meta, children):
        raw = str(children[0])[1:-1]
        return ast.Str(_loc(meta), raw.encode("utf-8", "surrogatepass").decode("unicode_escape", "replace")
                       if "\\" in raw else raw)

    def name(self, meta, children):
        return ast.Name(_loc(meta), str(children[0]))

    def call(self, meta, children):
        name, *args = children
        seen_kw = False
        for a in args:
            if isinstance(a, ast.Pair):
                seen_kw = True
            elif seen_kw:
                raise SpecError(f"in '{name}(...)': a positional argument follows a keyword argument", a.loc)
        pos = tuple(a for a in args if not isinstance(a, ast.Pair))
        kws = tuple(a for a in args if isinstance(a, ast.Pair))
        return ast.Call(_loc(meta), str(name), pos, kws)

    def pos_arg(self, meta, children):
        return children[0]

    def kw_arg(self, meta, children):
        key, value = children
        return ast.Pair(str(key), value, _loc(key))

    def pair(self, meta, children):
        key, value = children
        return ast.Pair(str(key), value, _loc(key))

    def flow_list(self, meta, children):
        return ast.ListLit(_loc(meta), tuple(children))

    def flow_map(self, meta, children):
        return ast.MapLit(_loc(meta), tuple(children))

    def _bin(op):
        def f(self, meta, children):
            return ast.BinOp(_loc(meta), op, children[0], children[1])
        return f

    add, sub, mul, div, floordiv = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("//")
    del _bin

    def neg(self, meta, children):
        return ast.Neg(_loc(meta), children[0])

    def _slice(self, node) -> str:
        loc = node.loc
        lines = _lines(self._text)
        if loc.end_line is None or loc.end_line != loc.line:
            return ""
        return lines[loc.line - 1][loc.column - 1: loc.end_column - 1]


def _expected(exc: UnexpectedInput) -> str:
    names = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or [])
    words = sorted({_WORDS.get(n, f"'{n.lower()}'" if n.isupper() else n) for n in names})
    if not words:
        return ""
    if len(words) > 6:
        words = words[:6] + ["..."]
    return "expected " + ", ".join(words)


def _describe_token(tok: Token) -> str:
    """What was found, worded to follow 'unexpected '."""
    if tok.type == "_NL":
        return "end of the line"
    if tok.type == "_INDENT":
        return "indentation (this line is indented more than the line above allows)"
    if tok.type == "_DEDENT":
        return "end of an indented block (this line is indented less than its block)"
    if tok.type == "$END":
        return "end of the file"
    return f"'{tok}'"


def _token_loc(tok: Token, text: str) -> Loc:
    line, col = tok.line, tok.column
    if tok.type in ("_INDENT", "_DEDENT") and tok.end_line is not None:
        # these borrow the position of the newline before them; the indented text starts at its end
        return Loc(tok.end_line, tok.end_column or 1)
    if tok.type == "_NL" and line is not None:
        # where the line ends (or its comment starts), not the next line
        return Loc(line, col or 1)
    return Loc(line or 1, col or 1)


def _check_bytes(data: bytes, source: Source) -> str:
    if len(data) > MAX_BYTES:
        raise SpecError(f"the spec is {len(data):,} bytes; a spec may be at most {MAX_BYTES:,}", Loc(1, 1), source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError(f"byte 0x{data[e.start]:02x} is not valid UTF-8 text", Loc(line, col), source) from None
    return text


def _lines(text: str) -> list[str]:
    """The lines as lark counts them (split at '\\n' only, unlike str.splitlines)."""
    lines = text.split("\n")
    if lines and lines[-1] == "" and len(lines) > 1:
        lines.pop()
    return lines


def _code(line: str):
    """(column, character) for the characters of ``line`` outside comments and strings."""
    quote = None
    escaped = False
    for col, ch in enumerate(line, 1):
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch == "#":
            return
        if ch in "\"'":
            quote = ch
            continue
        yield col, ch


_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f]")
_BRACKET = re.compile(r"[()\[\]{}]")


def _check_text(text: str, source: Source) -> None:
    bad = _CONTROL.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        col = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        ch = bad.group()
        if ch == "\t":
            raise SpecError("tab character: indent with spaces (columns would be ambiguous)", Loc(line, col), source)
        raise SpecError(f"control character U+{ord(ch):04X} in the spec", Loc(line, col), source)
    depth = 0
    for line, raw in enumerate(_lines(text), 1):
        if _BRACKET.search(raw) is None:
            continue
        for col, ch in _code(raw):
            if ch in "([{":
                depth += 1
                if depth > MAX_NESTING:
                    raise SpecError(f"brackets nested deeper than {MAX_NESTING} levels", Loc(line, col), source)
            elif ch in ")]}":
                depth = max(0, depth - 1)


def parse_text(text: str | bytes, file: str = "<string>") -> ast.Document:
    """Parse a spec's text into a :class:`ast.Document`; raises SpecError."""
    source = Source("", file)
    if isinstance(text, bytes):
        text = _check_bytes(text, source)
    elif len(text) > MAX_BYTES // 4 and (size := len(text.encode("utf-8", "surrogatepass"))) > MAX_BYTES:
        raise SpecError(f"the spec is {size:,} bytes; a spec may be at most {MAX_BYTES:,}", Loc(1, 1), source)
    if text.startswith("\ufeff"):
        text = text[1:]
    source.text = text
    _check_text(text, source)
    body = text if text.endswith("\n") else text + "\n"
    try:
        tree = parser().parse(body)
        return _ToAst(text).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc.with_source(source) from None
        raise SpecError(f"cannot read the spec: {e.orig_exc}", Loc(1, 1), source) from None
    except UnexpectedCharacters as e:
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        if ch in "\"'":
            raise SpecError(f"unterminated string: a string opened with {ch} must close on the same line",
                            Loc(e.line, e.column), source) from None
        what = _expected(e)
        raise SpecError(f"unexpected character {ch!r}" + (f"; {what}" if what else ""),
                        Loc(e.line, e.column), source) from None
    except UnexpectedEOF as e:
        what = _expected(e)
        lines = _lines(text)
        raise SpecError("unexpected end of file" + (f"; {what}" if what else ""),
                        Loc(len(lines), len(lines[-1]) + 1), source) from None
    except UnexpectedToken as e:
        tok = e.token
        what = _expected(e)
        if tok.type == "$END":
            lines = _lines(text)
            loc = Loc(len(lines), len(lines[-1]) + 1)
        else:
            loc = _token_loc(tok, text)
        raise SpecError(f"unexpected {_describe_token(tok)}" + (f"; {what}" if what else ""), loc, source) from None
    except DedentError as e:
        # lark does not say where; find the first line whose indentation matches no open block
        raise SpecError(_dedent_message(e), _dedent_loc(text), source) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark input errors
        raise SpecError(f"cannot parse: {e}", Loc(getattr(e, 'line', 1) or 1, getattr(e, 'column', 1) or 1),
                        source) from None
    except RecursionError:
        raise SpecError("the spec is nested too deeply", Loc(1, 1), source) from None


def _dedent_message(e: DedentError) -> str:
    return "this line's indentation matches no enclosing block (unindent to a level used above)"


def _dedent_loc(text: str) -> Loc:
    stack = [0]
    depth = 0
    for i, raw in enumerate(_lines(text), 1):
        stripped = raw.strip()
        opened = depth
        for _, ch in _code(raw):
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(0, depth - 1)
        if not stripped or stripped.startswith("#") or opened > 0:
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if indent > stack[-1]:
            stack.append(indent)
        else:
            while indent < stack[-1]:
                stack.pop()
            if indent != stack[-1]:
                return Loc(i, indent + 1)
    return Loc(1, 1)
