"""The one password rule of customer accounts, used by the CLI and the web alike.

At least :data:`MIN_LENGTH` characters, and not a common password nor a simple variation
of one (a repeat, a keyboard row, a sequence, a common password with digits added).
"Common" is judged by zxcvbn (a maintained library, MIT; its frequency lists include the
30,000 most common passwords of public leak corpora): a password it estimates at fewer
than :data:`MIN_GUESSES` guesses is refused.
"""

from __future__ import annotations

__all__ = ["MIN_GUESSES", "MIN_LENGTH", "RULE", "password_problem"]

MIN_LENGTH = 12
#: zxcvbn's estimate below which a password is "too guessable" (its scores 0 and 1).
MIN_GUESSES = 1e6
#: zxcvbn refuses longer input (and its time grows with the length); a longer password
#: is judged by its first 72 characters, which is conservative.
_ZXCVBN_MAX = 72
RULE = f"at least {MIN_LENGTH} characters, and not a common password"


def password_problem(password: object) -> str | None:
    """Why ``password`` is refused (a sentence fragment), or None when it is fine."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > 1024:
        return "must be at most 1024 characters"
    from zxcvbn import zxcvbn  # imported on first use: its word lists take a moment

    estimate = zxcvbn(password[:_ZXCVBN_MAX])
    if float(estimate["guesses"]) < MIN_GUESSES:
        return "is too common or too easy to guess (a repeat, a sequence or a known password)"
    return None
