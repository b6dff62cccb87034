#!/usr/bin/env python3
"""Keeps Rust source lines within rustfmt's max_width (100), which rustfmt itself cannot do for
comments and string literals.

    line_width.py --check FILE...   lists the lines over the width; exit status 1 if any
    line_width.py --fix FILE...     splits comments and string literals at a space

A comment line is split into two comment lines with the same marker (a list item's continuation
is indented under its text; code blocks in doc comments are left alone). A string literal is
split with a backslash-newline, which Rust removes together with the next line's leading
whitespace, so the string's value does not change (only at single spaces, so no whitespace is
lost). Run `cargo fmt` after --fix: it re-indents the calls that now fit, and a second --fix pass
catches what that moved. --check lets text diagrams, table rows and raw strings be long (they
have no place to break) and reports every other long line.
"""

import re
import sys

WIDTH = 100
COMMENT = re.compile(r"^(\s*)(//[/!]?)( ?)(.*)$")
LIST_ITEM = re.compile(r"^([-*+] |\d+[.)] )")
# A continuation line must not start something markdown reads differently.
MARKDOWN_START = re.compile(r"^([-*+>|#=] |\d+[.)] |```|[-=]+$)")


def width(line):
    return len(line)


def exempt(line, is_comment, in_code_block, state):
    """Lines --check lets be long: they have no place to break. A text diagram or code block in a
    doc comment, a markdown table row, and the inside of a raw string (a script, a fixture)."""
    if state.startswith("raw"):
        return True
    if is_comment:
        text = COMMENT.match(line).group(4).lstrip()
        return in_code_block or text.startswith("|")
    spans, _ = string_spans(line, state)
    return state == "code" and bool(re.search(r'(^|[^a-z])r#*"', line.lstrip()))


def split_comment(line, in_code_block):
    m = COMMENT.match(line)
    if not m or in_code_block:
        return None
    indent, marker, space, text = m.groups()
    if text.lstrip().startswith("|"):
        return None  # a markdown table row stays one line
    prefix = indent + marker + (space or " ")
    room = WIDTH - len(prefix)
    if room < 20:
        return None
    lead = re.match(r"^\s*", text).group(0)
    item = LIST_ITEM.match(text[len(lead) :])
    cont = prefix + lead + (" " * len(item.group(1)) if item else "")
    cut = None
    for i in range(min(room, len(text) - 1), 0, -1):
        if text[i] == " " and text[i - 1] != " ":
            rest = text[i + 1 :]
            if rest and not MARKDOWN_START.match(rest):
                cut = i
                break
    if cut is None:
        return None
    return [prefix + text[:cut], cont + text[cut + 1 :]]


def join_paragraph(rest, queue):
    """`rest` (the tail of a split comment line) joined with the next line when that continues
    the same paragraph, so a split does not leave a short orphan line behind."""
    here, there = COMMENT.match(rest), COMMENT.match(queue[-1])
    if not here or not there:
        return rest
    if (here.group(1), here.group(2)) != (there.group(1), there.group(2)):
        return rest
    text = there.group(4)
    lead = re.match(r"^\s*", here.group(4)).group(0)
    if not text.strip() or re.match(r"^\s*", text).group(0) != lead:
        return rest
    if MARKDOWN_START.match(text.strip()) or LIST_ITEM.match(text.strip()):
        return rest
    queue.pop()
    return rest + " " + text.strip()


def string_spans(line, state):
    """The (start, end) of each ordinary string literal's content on `line` (end exclusive; None
    when it runs on past the line) and the state at the line's end ('code' or 'string')."""
    spans = []
    i, n = 0, len(line)
    start = 0 if state == "string" else None
    while i < n:
        c = line[i]
        if start is not None:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                spans.append((start, i))
                start = None
            i += 1
            continue
        if line.startswith("//", i):
            break
        if c == "r" and re.match(r'r#*"', line[i:]) and (i == 0 or not line[i - 1].isalnum()):
            hashes = re.match(r"r(#*)\"", line[i:]).group(1)
            end = line.find('"' + hashes, i + 2 + len(hashes))
            if end < 0:
                return spans, "raw" + hashes
            i = end + 1 + len(hashes)
            continue
        if c == "'":
            m = re.match(r"'(\\.|\\x..|\\u\{[0-9a-fA-F]+\}|[^\\'])'", line[i:])
            if m:
                i += len(m.group(0))
                continue
        if c == '"':
            start = i + 1
        i += 1
    if start is not None:
        spans.append((start, None))
        return spans, "string"
    return spans, "code"


def split_at_comma(line, state):
    """Splits a code line after the last argument separator (a `, ` outside strings, inside a
    bracket opened on this line) that leaves the first part within the width: rustfmt leaves
    macro calls it cannot parse (tracing's `%field`) as they are."""
    if state != "code":
        return None
    spans, _ = string_spans(line, state)
    inside = set()
    for start, end in spans:
        inside.update(range(start - 1, (len(line) if end is None else end) + 1))
    depth, best = 0, None
    for i, c in enumerate(line):
        if i in inside:
            continue
        if line.startswith("//", i):
            break
        if c in "([{":
            depth += 1
            if depth == 1 and c != "(":
                depth += 100  # only the arguments of a call are split
        elif c in ")]}":
            depth -= 101 if depth == 101 else 1
        elif c == "," and depth == 1 and line[i + 1 : i + 2] == " " and i + 1 <= WIDTH:
            best = i
    if best is None or best < len(line) // 3:
        return None
    indent = re.match(r"^\s*", line).group(0) + "    "
    return [line[: best + 1], indent + line[best + 2 :].lstrip()]


def split_string(line, state):
    """Splits the string literal that crosses the width, if it can be split at a single space."""
    spans, _ = string_spans(line, state)
    for start, end in spans:
        stop = len(line) if end is None else end
        if stop <= WIDTH - 2 and end is not None:
            continue
        indent = re.match(r"^\s*", line).group(0) + "    "
        # After a `\n` escape (when the next line of the string does not start with blanks).
        for j in range(min(WIDTH - 1, stop), start + 10, -1):
            if line[j - 2 : j] == "\\n" and line[j - 3] != "\\" and line[j : j + 1] not in ("", " ", "\\"):
                return [line[:j] + "\\", indent + line[j:]]
        # The split leaves `...text \` on this line: the space at j stays, `\` follows it.
        for j in range(min(WIDTH - 2, stop - 2), start, -1):
            if line[j] == " " and line[j - 1] != " " and line[j + 1] not in " \\":
                if line[start:j].count("\\") % 2 and line[j - 1] == "\\":
                    continue
                return [line[: j + 1] + "\\", indent + line[j + 1 :]]
    return None


def process(path, fix):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out, over = [], []
    state, in_code_block = "code", False
    queue = list(lines)
    queue.reverse()
    while queue:
        line = queue.pop()
        stripped = line.strip()
        is_comment = state == "code" and COMMENT.match(line) is not None
        if is_comment and re.match(r"^//[/!]?\s*```", stripped):
            in_code_block = not in_code_block
        if width(line) > WIDTH and fix:
            parts = None
            if is_comment:
                parts = split_comment(line, in_code_block)
            elif not state.startswith("raw"):
                parts = split_at_comma(line, state) or split_string(line, state)
            if parts and is_comment and queue:
                parts[1] = join_paragraph(parts[1], queue)
            if parts:
                queue.append(parts[1])
                queue.append(parts[0])
                continue
        if width(line) > WIDTH and not exempt(line, is_comment, in_code_block, state):
            over.append((len(out) + 1, line))
        out.append(line)
        if state.startswith("raw"):
            end = line.find('"' + state[3:])
            if end >= 0:
                _, state = string_spans(line[end + len(state) - 2 :], "code")
        elif not is_comment:
            _, state = string_spans(line, state)
    if fix:
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(out))
    return over


def main():
    mode, files = sys.argv[1], sys.argv[2:]
    total = 0
    for path in files:
        for number, line in process(path, mode == "--fix"):
            total += 1
            if mode == "--check":
                print(f"{path}:{number}: {len(line)} columns (max {WIDTH})")
    if mode == "--check" and total:
        print(f"{total} lines longer than {WIDTH} columns", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
