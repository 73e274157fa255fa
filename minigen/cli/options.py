"""The model options of ``minigen fit MODEL --key value ...``: parsing them, listing them for
``--help``, and naming the nearest one when an option is misspelt.

A model's options are the named parameters of its ``for_data`` (which builds it for the data)
and of its constructor; ``rng`` is left out, since ``--seed`` sets it.
"""
import ast
import difflib
import inspect
import re


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def parse(words, name):
    """``--key value`` / ``--key=value`` pairs -> {key: value}; values parsed as Python
    literals where they are (``12``, ``0.5``, ``(16, 4)``), else kept as strings. The model's
    ``for_data`` (and its constructor) reject what they do not take."""
    options, i = {}, 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or len(word) == 2:
            raise UsageError(f"{name}: unexpected argument {word!r}; model options look like "
                             "--key value")
        key, eq, value = word[2:].partition("=")
        if not eq:
            if i + 1 >= len(words):
                raise UsageError(f"{name}: option --{key} needs a value")
            value, i = words[i + 1], i + 1
        try:
            options[key.replace("-", "_")] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key.replace("-", "_")] = value
        i += 1
    return options


def _named(func, skip):
    params = inspect.signature(func).parameters.values()
    return [(p.name, p.default) for p in params if p.name not in skip
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def known(cls):
    """Option name -> default (``inspect.Parameter.empty`` when there is none), for_data's
    first, then the constructor's."""
    skip = {"self", "cls", "X", "rng"}
    found = {}
    for func in (getattr(cls, "for_data", None), cls.__init__):
        for name, default in ([] if func is None else _named(func, skip)):
            found.setdefault(name, default)
    return found


def flag(name):
    return "--" + name.replace("_", "-")


def describe(cls, name):
    """The ``--help`` text listing ``name``'s options with their defaults."""
    lines = [f"options of {name} ({cls.__name__}), each given as --option value, the value a "
             "Python", "literal such as 3, 0.5, (64, 64) or 'full':"]
    for option, default in known(cls).items():
        shown = ("no default: set from the data or required (see below)"
                 if default is inspect.Parameter.empty else f"default {default!r}")
        lines.append(f"  {flag(option):<22} {shown}")
    doc = inspect.getdoc(getattr(cls, "for_data", None))
    if doc and getattr(cls, "for_data", None) is not None:
        lines += ["", f"how the command builds {name} for the data ({cls.__name__}.for_data):",
                  *("  " + line for line in doc.split("\n\n")[0].splitlines())]
    return "\n".join(lines)


def unknown_option(cls, name, err):
    """A UsageError naming the option and its nearest known spelling when ``err`` is Python's
    "unexpected keyword argument" error, else None."""
    found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
    if not isinstance(err, TypeError) or found is None:
        return None
    option = found.group(1)
    near = difflib.get_close_matches(option, list(known(cls)), n=1)
    hint = f"; did you mean {flag(near[0])}?" if near else ""
    return UsageError(f"{name}: unknown option {flag(option)}{hint} (minigen fit {name} --help "
                      "lists the options)")


def model_word(argv):
    """The MODEL of a ``fit`` command line (the first word after ``fit`` that is neither an
    option nor an option's value), or None."""
    words, i = list(argv[1:]), 0
    while i < len(words):
        word = words[i]
        if word in ("-h", "--help", "--quiet"):
            i += 1
        elif word.startswith("-"):
            i += 1 if "=" in word else 2
        else:
            return word
    return None
