"""qa's settings that are options too, stated once: `stampcheck qa` reads its defaults from here."""

BS = 32        # photos per batch
SETTLE = 5.0   # --watch: seconds a photo that does not decode must stay unchanged before it is reported unreadable
GATE_JOBS = 4  # --watch: --on-missing commands running at once; the others wait their turn
