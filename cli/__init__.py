"""The command line: one module per verb of ``python -m neural_avatar`` (see ``__main__.VERBS``).
Each parses its own flags and prints its own output; the work is in the packages it calls."""
