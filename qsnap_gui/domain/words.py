"""Counted nouns in what qsnap says: "1 band", "3 batches"."""


def plural(n: int, word: str, words: str | None = None) -> str:
    """ "1 band", "2 bands", "1 batch", "3 batches" (``words`` for an irregular plural)."""
    return f"{n} {word if n == 1 else words or word + 's'}"
