"""Where instances run: `docker` (one container each) and `local` (processes, in-container)."""
