"""Exit codes, the one contract every `stampcheck` command keeps (README: "Exit codes").

qa's codes are a production gate: a photo that could not be checked never counts as a pass.
"""

OK = 0             # done; for qa: every photo was read and carries a stamp
MISSING = 1        # qa: at least one photo lacks a stamp
USAGE = 2          # bad usage or bad input (options, files, folders); nothing was changed
UNREADABLE = 3     # qa: no stamp missing, but some photos could not be read
FAILED = 4         # the tool itself failed (a bug, or the machine: disk full, out of memory)
CRAWL_EMPTY = 5    # crawl kept no new image and had none before: nothing to compose from
INTERRUPTED = 130  # Ctrl-C (the shell's convention: 128 + SIGINT)
