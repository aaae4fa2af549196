"""Real human dialogues: readers (ReDial's schema, a generic JSON-lines format), title
resolution onto a trained workdir's catalogue and the zero-shot CRS evaluation protocol."""
