"""The one exception a user can cause. The CLI turns it into one line and exit code 2."""
import difflib


class CircuitsError(ValueError):
    """Bad input: unknown protocol or key, a value out of range, an impossible task."""


def did_you_mean(name: str, known, prefix: str = "") -> str:
    """' (did you mean optim.weight_decay?)'-style hint: the nearest known name, or ''."""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return f"did you mean {prefix}{close[0]}? " if close else ""


def unknown_key(path: str, known, prefix: str = "") -> CircuitsError:
    """The one message for a key that is not there: the nearest known key, then all of them."""
    name = path.rsplit(".", 1)[-1]
    return CircuitsError(f"unknown config key {path!r} ({did_you_mean(name, known, prefix)}"
                         f"known: {', '.join(map(str, known)) or 'none'})")
